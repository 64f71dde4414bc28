"""Multi-head self-attention with rotary position embeddings (RoPE) and padding / attention masks.

RoPE rotates each query and key by an angle proportional to its position, so the dot product q_i·k_j depends
only on their content and the offset i - j: relative positions at no extra cost, and the rotated q, k go
straight into `scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.errors import ConfigError


def check_heads(d_model: int, num_heads: int) -> None:
    """A config's cross-field check: `num_heads` must split `d_model` into heads of even size (rotary embeddings
    rotate pairs of channels)."""
    if d_model % num_heads or (d_model // num_heads) % 2:
        raise ConfigError(f"num_heads {num_heads} must divide d_model {d_model} into heads of even size")


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotating pairs of channels by angle position × frequency (geometric frequencies)."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {dim}")
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions [T] → (cos, sin), each [T, dim/2]."""
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + dim/2) of x [..., T, dim] by the angles whose cos/sin are [T, dim/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention over [B, T, D] with RoPE on queries and keys.

    Masks use True = "may take part": `mask` [B, T] marks real (non-padding) frames and hides padded keys;
    `attn_mask` [T, T] or [B, T, T] (query, key) restricts attention further, e.g. to chunks for streaming.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rotary = RotaryEmbedding(self.head_dim)

    def project(self, x: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, D] → q, k, v [B, H, T, dh], q and k rotated to `positions` [T] (default 0..T-1)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if positions is None:
            positions = torch.arange(t, device=x.device)
        cos, sin = self.rotary(positions)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Attention of q [B, H, Tq, dh] over k, v [B, H, Tk, dh] (allowed: True = may attend) → [B, Tq, D]."""
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        b, _, t, _ = q.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))

    def forward(
        self, x: Tensor, mask: Tensor | None = None, attn_mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        """x [B, T, D] → [B, T, D]; `positions` [T] defaults to 0..T-1 (pass an offset for streaming chunks)."""
        q, k, v = self.project(x, positions)
        allowed = None
        if attn_mask is not None:
            allowed = (attn_mask if attn_mask.dim() == 2 else attn_mask[:, None]).bool()
        if mask is not None:
            keys = mask[:, None, None, :]
            allowed = keys if allowed is None else allowed & keys
        if allowed is not None and mask is not None:
            # A padded query row may have no allowed key (NaN with some torch versions/kernels): let it see all.
            # Their outputs are padding anyway and never reach real frames.
            allowed = allowed | ~mask[:, None, :, None]
        return self.attend(q, k, v, allowed)

    def forward_cached(
        self, x: Tensor, positions: Tensor, past_keys: Tensor, past_values: Tensor, keep: int = -1, uncached: int = 0,
        attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One streaming chunk: x [B, T, D] attends to the cached past [B, H, L, dh] and to all of itself, or as
        `attn_mask` [T, L + T] allows (True = may attend; e.g. causally within x for a decoder-only prompt).

        Returns (output [B, T, D], keys, values) holding the last `keep` frames for the next chunk (-1 = all),
        leaving out the last `uncached` frames of x (look-ahead copies, seen again with the next chunk).
        """
        q, k, v = self.project(x, positions)
        k, v = torch.cat((past_keys, k), dim=2), torch.cat((past_values, v), dim=2)
        y = self.attend(q, k, v, attn_mask)
        if uncached:
            k, v = k[:, :, : k.size(2) - uncached], v[:, :, : v.size(2) - uncached]
        if keep >= 0:
            k, v = k[:, :, k.size(2) - min(keep, k.size(2)) :], v[:, :, v.size(2) - min(keep, v.size(2)) :]
        return y, k, v
