"""The speech encoders of `malsori.nn` registered as model families (nn sits below models and knows no registry):
each builder gets its section's settings and the feature bins."""

from __future__ import annotations

import dataclasses

from torch import nn

from malsori.models.registry import register_encoder
from malsori.nn.conformer import ConformerConfig, ConformerEncoder
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.transformer import TransformerEncoder, TransformerEncoderConfig


@register_encoder("conformer", ConformerConfig)
def build_conformer(cfg: ConformerConfig, input_dim: int) -> nn.Module:
    return ConformerEncoder(dataclasses.replace(cfg, input_dim=input_dim))


@register_encoder("lstm", LSTMConfig)
def build_lstm(cfg: LSTMConfig, input_dim: int) -> nn.Module:
    return LSTMEncoder(dataclasses.replace(cfg, input_dim=input_dim))


@register_encoder("transformer", TransformerEncoderConfig)
def build_transformer(cfg: TransformerEncoderConfig, input_dim: int) -> nn.Module:
    return TransformerEncoder(dataclasses.replace(cfg, input_dim=input_dim))
