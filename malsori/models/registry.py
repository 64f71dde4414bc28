"""Model config → model: encoders and heads register builders by name, `build_model` puts them together;
language models register by name too (`register_lm`, `build_lm`).

A new family adds itself without touching this file's logic:
`@register_encoder("lstm") def build(cfg: ModelConfig, input_dim: int) -> nn.Module` and
`@register_head("aed") def build(cfg: ModelConfig, encoder: nn.Module, vocab_size: int) -> nn.Module`
(its module must be imported by `malsori.models` so the decorator runs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from malsori.errors import ConfigError
from malsori.lm.gpt import GPT, GPTConfig
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.models.ctc import CTCModel
from malsori.models.transducer import TransducerConfig, TransducerModel
from malsori.nn.conformer import ConformerConfig, ConformerEncoder
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.transformer import TransformerEncoder, TransformerEncoderConfig

EncoderBuilder = Callable[["ModelConfig", int], nn.Module]
HeadBuilder = Callable[["ModelConfig", nn.Module, int], nn.Module]
LMBuilder = Callable[["LMConfig", int], nn.Module]
ENCODERS: dict[str, EncoderBuilder] = {}
HEADS: dict[str, HeadBuilder] = {}
LMS: dict[str, LMBuilder] = {}


@dataclass
class ModelConfig:
    """Which encoder and head make the model, and their sizes."""

    encoder: str = "conformer"  # encoder family, a name registered with register_encoder
    conformer: ConformerConfig = field(default_factory=ConformerConfig)  # used when encoder == "conformer"
    lstm: LSTMConfig = field(default_factory=LSTMConfig)  # used when encoder == "lstm"
    transformer: TransformerEncoderConfig = field(default_factory=TransformerEncoderConfig)  # used when encoder == "transformer"
    head: str = "ctc"  # output head / loss family, a name registered with register_head
    attention: AttentionConfig = field(default_factory=AttentionConfig)  # used when head == "attention"
    transducer: TransducerConfig = field(default_factory=TransducerConfig)  # used when head == "transducer"


def _registrar(table: dict[str, Callable], name: str) -> Callable[[Callable], Callable]:
    """A decorator that files its function in `table` under `name` and returns it unchanged."""

    def wrap(builder: Callable) -> Callable:
        table[name] = builder
        return builder

    return wrap


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator: make `builder(cfg, input_dim) -> encoder` available as `ModelConfig.encoder = name`."""
    return _registrar(ENCODERS, name)


def register_head(name: str) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator: make `builder(cfg, encoder, vocab_size) -> model` available as `ModelConfig.head = name`."""
    return _registrar(HEADS, name)


@register_encoder("conformer")
def _conformer(cfg: ModelConfig, input_dim: int) -> nn.Module:
    return ConformerEncoder(dataclasses.replace(cfg.conformer, input_dim=input_dim))


@register_encoder("lstm")
def _lstm(cfg: ModelConfig, input_dim: int) -> nn.Module:
    return LSTMEncoder(dataclasses.replace(cfg.lstm, input_dim=input_dim))


@register_encoder("transformer")
def _transformer(cfg: ModelConfig, input_dim: int) -> nn.Module:
    return TransformerEncoder(dataclasses.replace(cfg.transformer, input_dim=input_dim))


@register_head("ctc")
def _ctc(cfg: ModelConfig, encoder: nn.Module, vocab_size: int) -> nn.Module:
    return CTCModel(encoder, vocab_size)


@register_head("transducer")
def _transducer(cfg: ModelConfig, encoder: nn.Module, vocab_size: int) -> nn.Module:
    return TransducerModel(encoder, vocab_size, cfg.transducer)


@register_head("attention")
def _attention(cfg: ModelConfig, encoder: nn.Module, vocab_size: int) -> nn.Module:
    return AttentionModel(encoder, vocab_size, cfg.attention)


def build_model(cfg: ModelConfig, input_dim: int, vocab_size: int) -> nn.Module:
    """The model `cfg` names, for features of `input_dim` bins and `vocab_size` tokens (token 0 = blank)."""
    if cfg.encoder not in ENCODERS:
        raise ConfigError(f"model.encoder: unknown encoder '{cfg.encoder}' (known: {', '.join(sorted(ENCODERS))})")
    if cfg.head not in HEADS:
        raise ConfigError(f"model.head: unknown head '{cfg.head}' (known: {', '.join(sorted(HEADS))})")
    encoder = ENCODERS[cfg.encoder](cfg, input_dim)
    return HEADS[cfg.head](cfg, encoder, vocab_size)


@dataclass
class LMConfig:
    """Which language model a text task trains, and its sizes."""

    kind: str = "gpt"  # LM family, a name registered with register_lm
    gpt: GPTConfig = field(default_factory=GPTConfig)  # used when kind == "gpt"


def register_lm(name: str) -> Callable[[LMBuilder], LMBuilder]:
    """Decorator: make `builder(cfg, vocab_size) -> model` available as `LMConfig.kind = name`. The model maps
    tokens [B, T] to next-token logits [B, T, V], has `context` (tokens per training block) and
    `init_cache(batch)` / `forward_cached(tokens, cache) -> (logits, cache)` for incremental decoding."""
    return _registrar(LMS, name)


@register_lm("gpt")
def _gpt(cfg: LMConfig, vocab_size: int) -> nn.Module:
    return GPT(cfg.gpt, vocab_size)


def build_lm(cfg: LMConfig, vocab_size: int) -> nn.Module:
    """The language model `cfg` names, over `vocab_size` tokens."""
    if cfg.kind not in LMS:
        raise ConfigError(f"model.kind: unknown language model '{cfg.kind}' (known: {', '.join(sorted(LMS))})")
    return LMS[cfg.kind](cfg, vocab_size)
