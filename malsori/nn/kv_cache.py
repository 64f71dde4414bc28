"""The key/value cache of a stack of self-attention blocks during incremental decoding (the GPT, the Transformer
decoder): one tensor [N, layers, 2, H, P, dh] (P = positions read so far), hypothesis first, so `select_state`
reorders and copies it with a beam like any other state entry."""

from __future__ import annotations

import torch
from torch import Tensor

from malsori.nn.attention import MultiHeadSelfAttention


def empty_cache(attention: MultiHeadSelfAttention, n: int, layers: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> Tensor:
    """A cache of no positions [n, layers, 2, H, 0, dh] for `layers` blocks shaped like `attention`."""
    return torch.zeros(n, layers, 2, attention.num_heads, 0, attention.head_dim, device=device, dtype=dtype)


def block_cache(cache: Tensor, j: int) -> tuple[Tensor, Tensor]:
    """Block j's cached (keys, values), each [N, H, P, dh]."""
    return cache[:, j, 0], cache[:, j, 1]


def stack_cache(blocks: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Every block's (keys, values) [N, H, P', dh] after a step → the cache [N, layers, 2, H, P', dh]."""
    return torch.stack([torch.stack(kv, 1) for kv in blocks], 1)
