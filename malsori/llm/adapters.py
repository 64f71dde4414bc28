"""A GPT adapted to a task: full fine-tuning, prompt tuning (a soft prompt, the GPT frozen) or LoRA (low-rank updates
on chosen projections, the GPT frozen); and the adapter folder, which holds only the trained tensors beside a
reference to its base model folder (path and weights checksum).

`AdaptedLM` keeps the LM contract (`forward`, `context`, `init_cache`, `forward_cached`), so sampling, perplexity and
the prompted evaluations use it like any GPT. A soft prompt sits at positions 0..N-1: `forward` drops its logits,
and `init_cache` returns the cache after it, so cached generation sees the same positions as the full forward.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from malsori.config import bounded, from_dict, to_dict
from malsori.errors import ConfigError, MalsoriError
from malsori.files import read_json, sha256_of
from malsori.llm.lora import apply_lora, check_targets, merge_lora
from malsori.llm.soft_prompt import SoftPrompt
from malsori.lm.gpt import GPT
from malsori.pretrained import ModelDir, load_model_dir, resolve_model, write_model_dir
from malsori.tokenizer import Tokenizer

ADAPTER_TASK = "adapter"  # config.json's task of an adapter folder


@dataclass
class AdapterConfig:
    """What is trained on top of the base GPT."""

    kind: Literal["full", "prompt", "lora"] = "lora"  # full fine-tuning, prompt tuning, or LoRA
    prompt_length: int = bounded(16, ge=1)  # prompt tuning: soft-prompt vectors before the input
    lora_rank: int = bounded(8, ge=1)  # LoRA: rank r of each update B·A
    lora_alpha: float = bounded(16.0, gt=0)  # LoRA: the update is scaled by alpha / rank
    lora_dropout: float = bounded(0.0, ge=0, lt=1)  # LoRA: dropout on the adapter's input
    lora_targets: list[str] = field(default_factory=lambda: ["qkv", "out"])  # LoRA: qkv (the fused q/k/v) or some of q, k, v; out, ff_in, ff_out

    def __post_init__(self) -> None:
        problem = check_targets(self.lora_targets)
        if problem:
            raise ConfigError(f"lora_targets: {problem}")


class AdaptedLM(nn.Module):
    """A GPT with the adapter of `cfg`; only the adapter's parameters require gradients (all of them for `full`)."""

    def __init__(self, gpt: GPT, cfg: AdapterConfig) -> None:
        super().__init__()
        self.gpt, self.cfg, self.vocab_size = gpt, cfg, gpt.vocab_size
        gpt.requires_grad_(cfg.kind == "full")
        self.prompt = SoftPrompt(cfg.prompt_length, gpt.embed) if cfg.kind == "prompt" else None
        if cfg.kind == "lora":
            apply_lora(gpt, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
        self.prefix = len(self.prompt) if self.prompt is not None else 0
        self.context = gpt.context - self.prefix

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] → logits [B, T, V] (the soft prompt's positions are left out)."""
        x = self.gpt.embed(tokens)
        if self.prompt is not None:
            x = torch.cat((self.prompt(x.size(0)).to(x.dtype), x), 1)
        return self.gpt.forward_embeddings(x)[:, self.prefix :]

    def init_cache(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """The cache after the soft prompt (empty without one)."""
        cache = self.gpt.init_cache(batch, device, dtype)
        if self.prompt is not None:
            _, cache = self.gpt.forward_cached_embeddings(self.prompt(batch).to(device, dtype), cache)
        return cache

    def forward_cached(self, tokens: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        return self.gpt.forward_cached(tokens, cache)

    def trainable(self) -> dict[str, Tensor]:
        """The tensors training changes, by state-dict name (what an adapter file holds)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def merge(self) -> None:
        """Fold LoRA updates into the weights (inference only: the adapter can no longer be saved apart)."""
        merge_lora(self.gpt)


class NamedTensors(nn.Module):
    """Named tensors posing as a module, so the one model-folder writer stores only what a run trained (an adapter,
    a decoder-only speech model's projector and LoRA)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args, **kwargs) -> dict[str, Tensor]:  # noqa: D102 (only what write_model_dir reads)
        return dict(self.tensors)


def save_adapter(path: str | os.PathLike, model: AdaptedLM, base: Path, tokenizer: Tokenizer) -> Path:
    """Write an adapter folder: config.json (task "adapter", the adapter config, the base folder and its weights'
    sha256), model.safetensors with only the trained tensors, and the tokenizer."""
    if model.cfg.kind == "full":
        raise ValueError("a fully fine-tuned model is a whole model folder, not an adapter")
    if any(getattr(m, "merged", False) for m in model.modules()):
        raise ValueError("LoRA updates are merged into the weights: the adapter cannot be saved apart any more")
    base = resolve_model(base).resolve()
    base_cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    meta = {"adapter": to_dict(model.cfg), "base": str(base), "base_weights_sha256": base_cfg.get("weights_sha256"),
            "normalize": base_cfg.get("normalize", True)}
    return write_model_dir(Path(path), ADAPTER_TASK, NamedTensors(model.trainable()), meta, tokenizer)


def load_base(path: str) -> ModelDir:
    """The pretrained LM folder a run adapts (a recipe's `base`); every problem is a ConfigError naming the field."""
    if not path:
        raise ConfigError("base: no pretrained LM folder given")
    try:
        base = load_model_dir(path)
    except MalsoriError as e:
        raise ConfigError(f"base: {e}") from None
    if base.task != "lm":
        raise ConfigError(f"base: {base.path} is a model of task {base.task!r}, not a language model")
    return base


def save_adapted(path: str | os.PathLike, model: AdaptedLM, base: ModelDir) -> Path:
    """What an adapter run writes: a whole LM folder for full fine-tuning, else an adapter folder on `base`."""
    if model.cfg.kind == "full":
        meta = {"model": base.config["model"], "normalize": base.config.get("normalize", True)}
        return write_model_dir(Path(path), "lm", model.gpt, meta, base.tokenizer)
    return save_adapter(path, model, base.path, base.tokenizer)


def load_adapter(path: Path, config: dict) -> ModelDir:
    """An adapter folder (its config.json already read) on its base model: the base's checksum must match."""
    base = load_model_dir(config.get("base", ""))
    if base.task != "lm":
        raise MalsoriError(f"{path}: base {base.path} is a model of task {base.task!r}, not a language model")
    if base.config.get("weights_sha256") != config.get("base_weights_sha256"):
        raise MalsoriError(f"{path / 'config.json'}: the base model {base.path} is not the one the adapter was trained on "
                           "(its weights' sha256 differs)")
    try:
        cfg = from_dict(AdapterConfig, config.get("adapter", {}), "adapter")
    except ConfigError as e:
        raise MalsoriError(f"{path / 'config.json'}: {e}") from None
    model = AdaptedLM(base.model, cfg)
    load_trained(path, config, model, model.trainable(), f"a {cfg.kind} adapter of {base.path}")
    return ModelDir(path, "lm", {**base.config, "adapter": config["adapter"]}, model.eval(), base.tokenizer)


def load_trained(path: Path, config: dict, model: nn.Module, own: dict[str, Tensor], what: str) -> None:
    """Load a folder's model.safetensors, which holds only the trained tensors `own` of `model` (the rest came from
    its base folders): checksum against config.json, names and shapes must be exactly `own`'s."""
    weights = path / "model.safetensors"
    if not weights.is_file() or sha256_of(weights) != config.get("weights_sha256"):
        raise MalsoriError(f"{weights}: missing, or checksum mismatch (sha256 differs from config.json's weights_sha256)")
    try:
        saved = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise MalsoriError(f"{weights}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if set(saved) != set(own) or any(saved[k].shape != own[k].shape for k in own):
        raise MalsoriError(f"{weights}: its tensors do not match {what}")
    model.load_state_dict(saved, strict=False)


def load_lm(path: str | os.PathLike) -> ModelDir:
    """A language model folder, or an adapter folder on its base (task "lm" either way)."""
    folder = resolve_model(path)
    cfg_path = folder / "config.json"
    config = read_json(cfg_path) if cfg_path.is_file() else {}
    if isinstance(config, dict) and config.get("task") == ADAPTER_TASK:
        return load_adapter(folder, config)
    m = load_model_dir(folder)
    if m.task != "lm":
        raise MalsoriError(f"{m.path}: a model of task {m.task!r}, not a language model")
    return m
