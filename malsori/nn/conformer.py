"""Conformer encoder (Gulati et al., 2020): convolution-augmented Transformer blocks over subsampled features.

Each block is macaron-style: ½ feed-forward → self-attention → convolution module → ½ feed-forward → LayerNorm.
Padding never changes real frames: attention hides padded keys, the depthwise conv sees zeros where padding is
(exactly what an unpadded utterance sees past its end), and every other layer works frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.nn.attention import MultiHeadSelfAttention
from malsori.nn.mask import length_mask
from malsori.nn.subsampling import Conv2dSubsampling


@dataclass
class ConformerConfig:
    """Sizes of a Conformer encoder; the defaults give 5.16M parameters (5.20M with a 256-token CTC head)."""

    input_dim: int = 80  # feature bins per input frame (log-mel); build_model sets it from the features
    d_model: int = 176  # width of every block (attention, conv and residual stream)
    num_layers: int = 7  # number of Conformer blocks
    num_heads: int = 4  # attention heads; d_model / num_heads must be even (rotary embeddings)
    ff_expansion: int = 4  # feed-forward hidden size = ff_expansion × d_model
    conv_kernel: int = 15  # depthwise conv kernel in frames after subsampling (odd; 15 × 40 ms = 0.6 s)
    dropout: float = 0.1  # dropout on every residual branch and after subsampling
    attention_dropout: float = 0.0  # dropout on attention weights; >0 makes CPU attention ~3x slower (no fused kernel)
    subsampling_factor: int = 4  # time reduction of the conv front-end: 4, 6 or 8
    subsampling_channels: int = 32  # channels of the front-end convs; they run on every input frame, 64 costs +20% time


class FeedForward(nn.Module):
    """LayerNorm → Linear(D, e·D) → Swish → Linear(e·D, D) → Dropout.

    No dropout on the wide hidden layer: on CPU its random mask alone costs ~15% of a training step.
    """

    def __init__(self, d_model: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, expansion * d_model),
            nn.SiLU(),
            nn.Linear(expansion * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """LayerNorm → pointwise D→2D + GLU → zero the padding → depthwise conv → LayerNorm → Swish → pointwise → Dropout.

    LayerNorm over channels (not BatchNorm) after the depthwise conv keeps each frame independent of the batch.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd to keep frames aligned, got {kernel}")
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, T, D], mask [B, T] True on real frames → [B, T, D]."""
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.pointwise_out(F.silu(self.norm_mid(x)))
        return self.dropout(x)


class ConformerBlock(nn.Module):
    """x + ½FF(x) → x + MHSA(x) → x + Conv(x) → x + ½FF(x) → LayerNorm."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.norm_att = nn.LayerNorm(d)
        self.attention = MultiHeadSelfAttention(d, cfg.num_heads, cfg.attention_dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ff_expansion, cfg.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """x [B, T, D]; mask [B, T] True on real frames; attn_mask [T, T] or [B, T, T] True = may attend."""
        x = torch.add(x, self.ff1(x), alpha=0.5)
        x = x + self.dropout(self.attention(self.norm_att(x), mask, attn_mask))
        x = x + self.conv(x, mask)
        x = torch.add(x, self.ff2(x), alpha=0.5)
        return self.norm_out(x)


class ConformerEncoder(nn.Module):
    """Features [B, T, F] + lengths → encodings [B, T', D] + lengths, T' ≈ T / subsampling_factor.

    Padded output frames are set to zero.
    """

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.output_dim = cfg.d_model
        self.subsampling = Conv2dSubsampling(
            cfg.input_dim, cfg.d_model, cfg.subsampling_factor, cfg.subsampling_channels
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))

    @property
    def subsampling_factor(self) -> int:
        return self.subsampling.subsampling_factor

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → (enc [B, T', D], enc_lengths [B])."""
        x, lengths = self.subsampling(feats, lengths.to(feats.device))
        mask = length_mask(lengths, x.size(1))
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, mask)
        return x.masked_fill(~mask[..., None], 0.0), lengths
