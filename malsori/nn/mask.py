"""Padding masks: which frames of a padded batch hold data."""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """[B, T] bool mask, True at frames t < lengths[b] (real data), False on padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
