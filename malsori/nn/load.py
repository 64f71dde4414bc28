"""Loading saved tensors into a module with one clear line when they belong to another architecture (torch's own
error is a multi-line wall): used for checkpoints and model folders."""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

from malsori.errors import MalsoriError


# Tensor names that older versions wrote → today's names (pattern, replacement), applied to every saved state read
# back: the Conformer's feed-forward branches were `ff1.net.{0,1,3}` before they became the shared `FeedForward`.
RENAMED_KEYS = [(re.compile(r"(^|\.)(ff[12])\.net\.([013])\."), lambda m: f"{m[1]}{m[2]}.{'4' if m[3] == '3' else m[3]}.")]


def upgrade_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with the tensor names of older versions renamed to today's (RENAMED_KEYS); other names unchanged."""
    out = {}
    for key, value in state.items():
        for pattern, new in RENAMED_KEYS:
            key = pattern.sub(new, key, count=1)
        out[key] = value
    return out


def _short(items: Iterable[str], n: int = 4) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`module.load_state_dict(state)`, or a MalsoriError naming `where`, the missing and unknown keys, or the tensors
    whose shapes differ (saved vs this model's). Names written by older versions are upgraded first."""
    state = upgrade_keys(state)
    own = module.state_dict()
    missing, unknown = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unknown:
        parts = ([f"missing keys {_short(missing)}"] if missing else []) + ([f"unknown keys {_short(unknown)}"] if unknown else [])
        raise MalsoriError(f"{where}: does not match this model, another architecture or config ({'; '.join(parts)})")
    shapes = [f"{k} {list(state[k].shape)} (model: {list(own[k].shape)})" for k in sorted(own) if state[k].shape != own[k].shape]
    if shapes:
        raise MalsoriError(f"{where}: tensor shapes do not match this model: {_short(shapes, 3)}")
    module.load_state_dict(state)
