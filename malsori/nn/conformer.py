"""Conformer encoder (Gulati et al., 2020): convolution-augmented Transformer blocks over subsampled features.

Each block is macaron-style: ½ feed-forward → self-attention → convolution module → ½ feed-forward → LayerNorm.
Padding never changes real frames: attention hides padded keys, the depthwise conv sees zeros where padding is
(exactly what an unpadded utterance sees past its end), and every other layer works frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.nn.attention import MultiHeadSelfAttention, check_heads
from malsori.nn.chunked import ChunkConfig, ChunkedEncoder, LookAhead, block_attention
from malsori.nn.feedforward import FeedForward
from malsori.nn.subsampling import LAYOUTS, Conv2dSubsampling

LayerCache = tuple[Tensor, Tensor, Tensor]  # (attention keys, attention values, conv inputs) of one block


@dataclass
class ConformerConfig:
    """Sizes of a Conformer encoder; the defaults give 5.16M parameters (5.20M with a 256-token CTC head)."""

    input_dim: int = bounded(80, ge=1)  # feature bins per input frame (log-mel); build_model sets it from the features
    d_model: int = bounded(176, ge=1)  # width of every block (attention, conv and residual stream)
    num_layers: int = bounded(7, ge=1)  # number of Conformer blocks
    num_heads: int = bounded(4, ge=1)  # attention heads; d_model / num_heads must be even (rotary embeddings)
    ff_expansion: int = bounded(4, ge=1)  # feed-forward hidden size = ff_expansion × d_model
    conv_kernel: int = bounded(15, ge=1, odd=True)  # depthwise conv kernel in frames after subsampling (odd; 15 × 40 ms = 0.6 s)
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on every residual branch and after subsampling
    attention_dropout: float = bounded(0.0, ge=0, lt=1)  # dropout on attention weights; >0 makes CPU attention ~3x slower (no fused kernel)
    subsampling_factor: int = bounded(4, one_of=tuple(LAYOUTS))  # time reduction of the conv front-end: 4, 6 or 8
    subsampling_channels: int = bounded(32, ge=1)  # channels of the front-end convs; they run on every input frame, 64 costs +20% time
    chunk: ChunkConfig = field(default_factory=ChunkConfig)  # chunked attention / causal conv for streaming

    def __post_init__(self) -> None:
        check_heads(self.d_model, self.num_heads)


class ConvModule(nn.Module):
    """LayerNorm → pointwise D→2D + GLU → zero the padding → depthwise conv → LayerNorm → Swish → pointwise → Dropout.

    LayerNorm over channels (not BatchNorm) after the depthwise conv keeps each frame independent of the batch.
    A causal module pads only on the left (frame t sees t-K+1..t), so it can stream with the last K-1 inputs cached.
    """

    def __init__(self, d_model: int, kernel: int, dropout: float, causal: bool = False) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd to keep frames aligned, got {kernel}")
        self.padding = (kernel - 1, 0) if causal else (kernel // 2, kernel // 2)
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, cache: Tensor | None = None, lookahead: LookAhead | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x [B, T, D], mask [B, T] True on real frames → ([B, T, D], new cache).

        `cache` [B, D, K-1] (causal only) holds the depthwise conv's inputs just before x; the new cache ends the
        chunk frames of x. With `lookahead`, the frames after the first `lookahead.frames` are look-ahead copies:
        each is convolved over its own chunk's past and the copies before it, and never enters the cache.
        """
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        x = x.transpose(1, 2)
        if lookahead is None and cache is None:
            x = self.depthwise(F.pad(x, self.padding)).transpose(1, 2)
        else:
            if self.padding[1]:
                raise ValueError("look-ahead copies and streaming need a causal conv module (chunk.causal: true)")
            past = x.new_zeros(x.size(0), x.size(1), self.padding[0]) if cache is None else cache
            n = x.size(2) if lookahead is None else lookahead.frames
            chunk = torch.cat((past, x[:, :, :n]), dim=2)
            y = self.depthwise(chunk)
            if lookahead is not None and lookahead.copies:
                windows = torch.cat((chunk, x[:, :, n:]), dim=2)[:, :, lookahead.conv_windows(self.padding[0] + 1)]
                copies = torch.einsum("bdnk,dk->bdn", windows, self.depthwise.weight[:, 0]) + self.depthwise.bias[:, None]
                y = torch.cat((y, copies), dim=2)
            x = y.transpose(1, 2)
            cache = None if cache is None else chunk[:, :, chunk.size(2) - cache.size(2) :]
        x = self.pointwise_out(F.silu(self.norm_mid(x)))
        return self.dropout(x), cache


class ConformerBlock(nn.Module):
    """x + ½FF(x) → x + MHSA(x) → x + Conv(x) → x + ½FF(x) → LayerNorm."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_expansion, activation="swish")
        self.norm_att = nn.LayerNorm(d)
        self.attention = MultiHeadSelfAttention(d, cfg.num_heads, cfg.attention_dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout, cfg.chunk.causal)
        self.ff2 = FeedForward(d, cfg.ff_expansion, activation="swish")
        self.norm_out = nn.LayerNorm(d)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, attn_mask: Tensor | None = None, positions: Tensor | None = None,
        cache: LayerCache | None = None, keep: int = -1, lookahead: LookAhead | None = None,
    ) -> tuple[Tensor, LayerCache | None]:
        """x [B, T, D]; mask [B, T] True on real frames; attn_mask [T, T] or [B, T, T] True = may attend.

        Streaming: `cache` = (keys, values, conv inputs) of the past → also returns the cache for the next chunk,
        with `keep` frames of keys/values (-1 = all). `lookahead` marks the look-ahead copies at the end of x.
        """
        x = torch.add(x, self.dropout(self.ff1(x)), alpha=0.5)
        a, keys, values = block_attention(self.attention, self.norm_att(x), mask, attn_mask, positions, cache, keep, lookahead)
        x = x + self.dropout(a)
        c, conv = self.conv(x, mask, None if cache is None else cache[2], lookahead)
        x = x + c
        x = torch.add(x, self.dropout(self.ff2(x)), alpha=0.5)
        return self.norm_out(x), (None if cache is None else (keys, values, conv))


class ConformerEncoder(ChunkedEncoder):
    """Features [B, T, F] + lengths → encodings [B, T', D] + lengths, T' ≈ T / subsampling_factor.

    Padded output frames are set to zero. Chunked attention and streaming come from `ChunkedEncoder`.
    """

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk = cfg.chunk
        self.output_dim = cfg.d_model
        self.conv_context = cfg.conv_kernel - 1 if cfg.chunk.causal else 0
        self.subsampling = Conv2dSubsampling(
            cfg.input_dim, cfg.d_model, cfg.subsampling_factor, cfg.subsampling_channels
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))

    def check_streamable(self) -> None:
        if not self.cfg.chunk.causal:
            raise ConfigError(
                "this Conformer's convolutions look ahead (model.conformer.chunk.causal is false), so it cannot "
                "stream; train a streaming model, e.g. `malsori train streaming/conformer_ctc`"
            )
