"""LoRA (Hu et al., 2021): a frozen Linear W plus a trainable low-rank update (α/r)·B·A, B zero at the start so
training begins from the base model; `merge` folds the update into W for inference at no extra cost.

`LoRALinear` keeps the wrapped layer's own `weight` and `bias` (same names in the state dict), so a base model's
tensors load into an adapted model unchanged and the adapter's tensors are only `lora_a` and `lora_b`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Which Linear layers of a GPT block a target name adapts (by the end of the module's name).
TARGETS = {"qkv": "attention.qkv", "out": "attention.out", "ff_in": "ff.1", "ff_out": "ff.4"}


class LoRALinear(nn.Linear):
    """y = x Wᵀ + b + (α/r) · dropout(x) Aᵀ Bᵀ, with A [r, in] and B [out, r]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + self.scale * F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + (α/r)·B·A; the layer then computes the same function with one matrix product."""
        if not self.merged:
            self.weight += self.scale * (self.lora_b @ self.lora_a)
            self.merged = True


def apply_lora(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Replace the Linear layers named by `targets` (keys of TARGETS) with LoRALinear wrappers; returns their names."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown LoRA targets {unknown} (known: {', '.join(TARGETS)})")
    suffixes = tuple(TARGETS[t] for t in targets)
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n.endswith(suffixes)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer of `model` into its weights; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.merge()
    return len(layers)
