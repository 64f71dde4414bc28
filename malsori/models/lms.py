"""The language models of `malsori.lm` registered as model families (lm sits below models and knows no registry)."""

from __future__ import annotations

from torch import nn

from malsori.lm.gpt import GPT, GPTConfig
from malsori.models.registry import register_lm


@register_lm("gpt", GPTConfig)
def build_gpt(cfg: GPTConfig, vocab_size: int) -> nn.Module:
    return GPT(cfg, vocab_size)
