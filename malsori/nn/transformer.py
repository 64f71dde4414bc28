"""Transformer encoder (conv subsampling + pre-LayerNorm self-attention blocks) and Transformer decoder.

Positions come from rotary embeddings inside self-attention (relative offsets); cross-attention is content-only,
as the memory already carries where each frame is. Pre-LN blocks (x + f(LN(x))) train without warm-up tricks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.decode.scorers import select_state
from malsori.nn.attention import MultiHeadSelfAttention
from malsori.nn.chunked import ChunkConfig, ChunkedEncoder
from malsori.nn.mask import length_mask
from malsori.nn.subsampling import Conv2dSubsampling


@dataclass
class TransformerEncoderConfig:
    """Sizes of a Transformer encoder; the defaults give ~5.1M parameters."""

    input_dim: int = 80  # feature bins per input frame (log-mel); build_model sets it from the features
    d_model: int = 256  # width of every block
    num_layers: int = 6  # number of self-attention blocks
    num_heads: int = 4  # attention heads; d_model / num_heads must be even (rotary embeddings)
    ff_expansion: int = 4  # feed-forward hidden size = ff_expansion × d_model
    dropout: float = 0.1  # dropout on every residual branch and after subsampling
    attention_dropout: float = 0.1  # dropout on attention weights
    subsampling_factor: int = 4  # time reduction of the conv front-end: 4, 6 or 8
    subsampling_channels: int = 64  # channels of the front-end convs
    chunk: ChunkConfig = field(default_factory=ChunkConfig)  # chunked attention for streaming (`causal` is unused)


def feed_forward(d_model: int, expansion: int, dropout: float) -> nn.Sequential:
    """LayerNorm → Linear(D, e·D) → ReLU → Dropout → Linear(e·D, D): the pre-LN feed-forward branch."""
    return nn.Sequential(
        nn.LayerNorm(d_model), nn.Linear(d_model, expansion * d_model), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(expansion * d_model, d_model),
    )


class TransformerBlock(nn.Module):
    """x + MHSA(LN(x)) → x + FFN(LN(x)), both branches with dropout."""

    def __init__(self, d_model: int, num_heads: int, ff_expansion: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm_att = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, num_heads, attention_dropout)
        self.ff = feed_forward(d_model, ff_expansion, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, attn_mask: Tensor | None = None, positions: Tensor | None = None,
        cache: tuple[Tensor, Tensor, Tensor] | None = None, keep: int = -1,
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """x [B, T, D]; mask [B, T] True on real frames; attn_mask [T, T] True = may attend.

        Streaming: `cache` = (keys, values, unused conv state) of the past → also returns the next chunk's cache.
        """
        h = self.norm_att(x)
        if cache is None:
            x = x + self.dropout(self.attention(h, mask, attn_mask, positions))
        else:
            a, keys, values = self.attention.forward_cached(h, positions, cache[0], cache[1], keep)
            x, cache = x + self.dropout(a), (keys, values, cache[2])
        return x + self.dropout(self.ff(x)), cache


class TransformerEncoder(ChunkedEncoder):
    """Features [B, T, F] + lengths → encodings [B, T', D] + lengths; padded output frames are zero.

    Chunked attention and streaming come from `ChunkedEncoder`.
    """

    def __init__(self, cfg: TransformerEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk = cfg.chunk
        self.output_dim = cfg.d_model
        self.subsampling = Conv2dSubsampling(cfg.input_dim, cfg.d_model, cfg.subsampling_factor, cfg.subsampling_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.num_heads, cfg.ff_expansion, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def finish(self, x: Tensor) -> Tensor:
        return self.norm(x)


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries [B, L, D] over memory [B, T, M], hiding padded memory frames.

    Weights are computed explicitly (not fused) so the decoder can report where each token looked.
    """

    def __init__(self, d_model: int, memory_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(memory_dim, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor, kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """→ (output [B, L, D], weights [B, L, T] averaged over heads); `kv` = self.kv(memory) if precomputed."""
        b, l, d = x.shape
        q = self.q(x).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(memory) if kv is None else kv
        k, v = kv.view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5  # [B, H, L, T]
        weights = scores.masked_fill(~memory_mask[:, None, None, :], float("-inf")).softmax(-1)
        y = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, l, d)
        return self.out(y), weights.mean(1)


class DecoderBlock(nn.Module):
    """x + causal MHSA(LN(x)) → x + CrossAttention(LN(x), memory) → x + FFN(LN(x))."""

    def __init__(self, d_model: int, memory_dim: int, num_heads: int, ff_expansion: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadSelfAttention(d_model, num_heads, attention_dropout)
        self.norm_cross = nn.LayerNorm(d_model)
        self.cross_attention = CrossAttention(d_model, memory_dim, num_heads, attention_dropout)
        self.ff = feed_forward(d_model, ff_expansion, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, causal: Tensor, memory: Tensor, memory_mask: Tensor,
                memory_kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = x + self.dropout(self.self_attention(self.norm_self(x), mask, causal))
        y, weights = self.cross_attention(self.norm_cross(x), memory, memory_mask, memory_kv)
        x = x + self.dropout(y)
        return x + self.dropout(self.ff(x)), weights


class TransformerDecoder(nn.Module):
    """Token embedding → N pre-LN decoder blocks → LayerNorm → output projection (an attention decoder).

    `step` recomputes the whole prefix each call (no self-attention cache): simple, and exactly the teacher-forced
    `forward`. Its state keeps the memory's cross-attention keys/values "memory_kv" [N, layers, T, 2D] (projected
    once per utterance, the costliest part to redo) and "attn" [N, T], the last block's cross-attention of the
    newest position (for token times).
    """

    def __init__(self, vocab_size: int, memory_dim: int, d_model: int = 256, num_layers: int = 6, num_heads: int = 4,
                 ff_expansion: int = 4, dropout: float = 0.1, attention_dropout: float = 0.1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.scale = d_model**0.5
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, memory_dim, num_heads, ff_expansion, dropout, attention_dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def _run(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor,
             memory_kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """→ (logits [B, L, V], last block's cross-attention weights [B, L, T])."""
        l = ys_in.size(1)
        mask = length_mask(ys_in_lens, l)
        causal = torch.ones(l, l, dtype=torch.bool, device=ys_in.device).tril()
        memory_mask = length_mask(memory_lens, memory.size(1))
        x = self.dropout(self.embed(ys_in) * self.scale)
        weights = memory.new_zeros(0)
        for i, layer in enumerate(self.layers):
            x, weights = layer(x, mask, causal, memory, memory_mask, None if memory_kv is None else memory_kv[:, i])
        return self.output(self.norm(x)), weights

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """Teacher forcing: memory [B, T, D], ys_in [B, L] (sos + tokens, 0-padded) → logits [B, L, V]."""
        return self._run(memory, memory_lens, ys_in, ys_in_lens)[0]

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> dict[str, Tensor | None]:
        kv = torch.stack([layer.cross_attention.kv(memory) for layer in self.layers], dim=1)
        return {"memory_kv": kv, "attn": None}

    def step(self, ys: Tensor, state: dict, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, dict]:
        """ys [N, L] prefixes (all of length L) → (next-token log-probs [N, V], state)."""
        lens = torch.full((ys.size(0),), ys.size(1), dtype=torch.long, device=ys.device)
        logits, weights = self._run(memory, memory_lens, ys, lens, state["memory_kv"])
        return F.log_softmax(logits[:, -1].float(), dim=-1), {"memory_kv": state["memory_kv"], "attn": weights[:, -1]}

    def select_state(self, state: dict, index: Tensor) -> dict:
        return select_state(state, index)
