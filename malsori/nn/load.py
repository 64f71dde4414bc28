"""Loading saved tensors into a module with one clear line when they belong to another architecture (torch's own
error is a multi-line wall): used for checkpoints and model folders."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from malsori.errors import MalsoriError


def _short(items: Iterable[str], n: int = 4) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`module.load_state_dict(state)`, or a MalsoriError naming `where`, the missing and unknown keys, or the tensors
    whose shapes differ (saved vs this model's)."""
    own = module.state_dict()
    missing, unknown = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unknown:
        parts = ([f"missing keys {_short(missing)}"] if missing else []) + ([f"unknown keys {_short(unknown)}"] if unknown else [])
        raise MalsoriError(f"{where}: does not match this model, another architecture or config ({'; '.join(parts)})")
    shapes = [f"{k} {list(state[k].shape)} (model: {list(own[k].shape)})" for k in sorted(own) if state[k].shape != own[k].shape]
    if shapes:
        raise MalsoriError(f"{where}: tensor shapes do not match this model: {_short(shapes, 3)}")
    module.load_state_dict(state)
