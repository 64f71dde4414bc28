"""The tables of model families and the builders: speech models are an encoder joined to a head (`build_model`),
language models one family (`build_lm`). This module imports no family; each registers itself beside its code:

    @register_encoder("lstm", LSTMConfig)       # builder(settings, input_dim) -> encoder (with `output_dim`)
    @register_head("attention", AttentionConfig)  # builder(settings or None, encoder, vocab_size) -> model
    @register_lm("gpt", GPTConfig)              # builder(settings, vocab_size) -> LM

and `malsori.models.families` (imported by `malsori.models`, so by anything that imports this module) imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from malsori.tagged import Registry, TaggedConfig

ENCODERS = Registry("encoder")
HEADS = Registry("head")
LMS = Registry("language model")
register_encoder = ENCODERS.register
register_head = HEADS.register
register_lm = LMS.register


@dataclass(init=False, eq=False)
class ModelConfig(TaggedConfig):
    """Which encoder and head make a speech model; their settings are the sections named after them
    (`conformer: {...}`, `attention: {...}`), read as `cfg.conformer`."""

    TAGS: ClassVar = {"encoder": ENCODERS, "head": HEADS}
    encoder: str = "conformer"  # encoder family, a name registered with register_encoder
    head: str = "ctc"  # output head / loss family, a name registered with register_head


@dataclass(init=False, eq=False)
class LMConfig(TaggedConfig):
    """Which language model a text task trains; its settings are the section named after it (`gpt: {...}`)."""

    TAGS: ClassVar = {"kind": LMS}
    kind: str = "gpt"  # LM family, a name registered with register_lm


def build_model(cfg: ModelConfig, input_dim: int, vocab_size: int) -> nn.Module:
    """The model `cfg` names, for features of `input_dim` bins and `vocab_size` tokens (token 0 = blank)."""
    encoder, head = cfg.family("encoder"), cfg.family("head")
    return head.build(cfg.section("head"), encoder.build(cfg.section("encoder"), input_dim), vocab_size)


def build_lm(cfg: LMConfig, vocab_size: int) -> nn.Module:
    """The language model `cfg` names, over `vocab_size` tokens. The model maps tokens [B, T] to next-token logits
    [B, T, V], has `context` (tokens per training block) and `init_cache(batch)` / `forward_cached(tokens, cache) ->
    (logits, cache)` for incremental decoding."""
    return cfg.family("kind").build(cfg.section("kind"), vocab_size)
