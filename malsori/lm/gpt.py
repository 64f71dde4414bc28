"""A decoder-only Transformer language model (GPT): token embedding → pre-norm causal self-attention blocks →
LayerNorm → logits through the same embedding matrix (tied input/output embeddings).

The blocks are the Transformer encoder's (`malsori.nn.transformer.TransformerBlock`): rotary positions, one fused
q/k/v projection per block (`attention.qkv`, one Linear giving q, k and v), scaled dot-product attention. A causal
mask makes them a decoder. Incremental decoding keeps every block's keys and values in a cache [B, layers, 2, H, P,
dh] (P = positions read so far), so a new token costs O(P) instead of re-running the prefix; `select_state`
reorders the cache with a beam like any decoder state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.nn.attention import check_heads
from malsori.nn.kv_cache import block_cache, empty_cache, stack_cache
from malsori.nn.transformer import TransformerBlock


@dataclass
class GPTConfig:
    """Sizes of a GPT; the defaults give ~3.2 M parameters plus 256 × vocabulary for the embeddings."""

    d_model: int = bounded(256, ge=1)  # width of the embeddings and of every block
    num_layers: int = bounded(4, ge=1)  # causal self-attention blocks
    num_heads: int = bounded(4, ge=1)  # attention heads; d_model / num_heads must be even (rotary embeddings)
    ff_expansion: int = bounded(4, ge=1)  # feed-forward hidden size = ff_expansion × d_model
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on the embeddings and every residual branch
    attention_dropout: float = bounded(0.0, ge=0, lt=1)  # dropout on attention weights
    context: int = bounded(256, ge=1)  # tokens per training block: the longest context the model learns to use

    def __post_init__(self) -> None:
        check_heads(self.d_model, self.num_heads)


class GPT(nn.Module):
    """tokens [B, T] → next-token logits [B, T, V], each position seeing only itself and earlier ones."""

    def __init__(self, cfg: GPTConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg, self.context, self.vocab_size = cfg, cfg.context, vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.num_heads, cfg.ff_expansion, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialization: N(0, 0.02) weights, zero biases, the projections back into the residual stream
        scaled by 1/sqrt(2 × layers) so the stream's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * self.cfg.num_layers) if name.endswith(("attention.out.weight", "ff.4.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def logits(self, x: Tensor) -> Tensor:
        """Hidden states [B, T, D] → logits [B, T, V] through the tied embedding."""
        return F.linear(self.norm(x), self.embed.weight)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, T] → logits [B, T, V] (causal: position t sees tokens 0..t)."""
        return self.forward_embeddings(self.embed(tokens))

    def forward_embeddings(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Input vectors [B, T, D] (token embeddings, or a prefix of other vectors before them: soft prompts, speech
        frames) → logits [B, T, V], causally; `mask` [B, T] (True = real) hides padding positions as keys."""
        t = x.size(1)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        x = self.dropout(x)
        for layer in self.layers:
            x, _ = layer(x, mask, attn_mask=causal)
        return self.logits(x)

    def init_cache(self, batch: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """An empty key/value cache [B, layers, 2, H, 0, dh]."""
        return empty_cache(self.layers[0].attention, batch, len(self.layers), device, dtype)

    def forward_cached(self, tokens: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """tokens [B, T] continuing the P positions in `cache` → (logits [B, T, V], cache of P + T positions).

        T may be more than 1 (a prompt): the new tokens attend causally among themselves and to all cached ones.
        """
        return self.forward_cached_embeddings(self.embed(tokens), cache)

    def forward_cached_embeddings(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """`forward_cached` on input vectors [B, T, D] (see `forward_embeddings`)."""
        past, t = cache.size(4), x.size(1)
        positions = torch.arange(past, past + t, device=x.device)
        allowed = None
        if t > 1:  # new position i may see the past and new positions 0..i
            allowed = torch.arange(past + t, device=x.device)[None, :] <= positions[:, None]
        x = self.dropout(x)
        caches = []
        for j, layer in enumerate(self.layers):
            x, (keys, values, _) = layer(x, attn_mask=allowed, positions=positions, cache=(*block_cache(cache, j), None))
            caches.append((keys, values))
        return self.logits(x), stack_cache(caches)
