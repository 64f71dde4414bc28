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

# Which Linear layers of a GPT block a target name adapts (by the end of the module's name), and which part of its
# output: q, k and v are the thirds of the fused attention.qkv (Hu et al. adapt only q and v), None = all of it.
TARGETS: dict[str, tuple[str, int | None]] = {
    "qkv": ("attention.qkv", None), "q": ("attention.qkv", 0), "k": ("attention.qkv", 1), "v": ("attention.qkv", 2),
    "out": ("attention.out", None), "ff_in": ("ff.1", None), "ff_out": ("ff.4", None)}
FUSED_PARTS = 3  # attention.qkv's output is [q | k | v]


def check_targets(targets: list[str]) -> str:
    """What is wrong with a list of LoRA targets ("" if nothing): unknown names, or a part given with its whole."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        return f"unknown {unknown} (known: {', '.join(TARGETS)})"
    if "qkv" in targets and {"q", "k", "v"} & set(targets):
        return "qkv already adapts q, k and v: give qkv or some of q, k, v, not both"
    if len(set(targets)) != len(targets):
        return f"{targets} names a target twice"
    return ""


class LoRALinear(nn.Linear):
    """y = x Wᵀ + b + (α/r) · dropout(x) Aᵀ Bᵀ, with A [r, in] and B [out, r]. With `parts` (indices of equal
    slices of the output, e.g. q and v of a fused q/k/v) each chosen slice gets its own rank-r pair (A_j, B_j), as
    loralib's MergedLinear does, and the other slices stay the base layer's."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0,
                 parts: list[int] | None = None, num_parts: int = 1) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.parts = list(range(num_parts)) if parts is None else sorted(parts)
        self.part_size = base.out_features // num_parts
        k, dev = len(self.parts), base.weight.device
        self.lora_a = nn.Parameter(torch.empty(k * rank, base.in_features, device=dev))
        self.lora_b = nn.Parameter(torch.zeros(k * self.part_size, rank, device=dev))
        for a in self.lora_a.data.split(rank):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        rows = torch.cat([torch.arange(j * self.part_size, (j + 1) * self.part_size) for j in self.parts])
        self.register_buffer("rows", rows.to(dev), persistent=False)
        self.rank, self.scale = rank, alpha / rank
        self.lora_dropout = nn.Dropout(dropout)
        self.merged = False

    def delta(self, x: Tensor) -> Tensor:
        """The low-rank update of the chosen output rows: [..., in] → [..., k · part_size]."""
        k = len(self.parts)
        h = F.linear(self.lora_dropout(x), self.lora_a).unflatten(-1, (k, self.rank))
        b = self.lora_b.view(k, self.part_size, self.rank)
        return self.scale * torch.einsum("...kr,kor->...ko", h, b).flatten(-2)

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        if len(self.rows) == self.out_features:
            return y + self.delta(x)
        return y.index_add(-1, self.rows, self.delta(x).to(y.dtype))

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + (α/r)·B·A on the chosen rows; the layer then computes the same function with one matrix product."""
        if not self.merged:
            k = len(self.parts)
            a = self.lora_a.view(k, self.rank, self.in_features)
            b = self.lora_b.view(k, self.part_size, self.rank)
            self.weight[self.rows] += self.scale * torch.bmm(b, a).flatten(0, 1)
            self.merged = True


def apply_lora(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Replace the Linear layers named by `targets` (keys of TARGETS) with LoRALinear wrappers; returns their names."""
    problem = check_targets(targets)
    if problem:
        raise ValueError(f"LoRA targets: {problem}")
    by_suffix: dict[str, list[int] | None] = {}
    for t in targets:
        suffix, part = TARGETS[t]
        by_suffix[suffix] = None if part is None else [*(by_suffix.get(suffix) or []), part]
    names = []
    for name, m in list(model.named_modules()):
        suffix = next((s for s in by_suffix if name.endswith(s)), None)
        if type(m) is not nn.Linear or suffix is None:
            continue
        parts = by_suffix[suffix]
        parent_name, _, child = name.rpartition(".")
        layer = LoRALinear(m, rank, alpha, dropout, parts, FUSED_PARTS if parts is not None else 1)
        setattr(model.get_submodule(parent_name), child, layer)
        names.append(name)
    return names


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer of `model` into its weights; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.merge()
    return len(layers)
