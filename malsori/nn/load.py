"""Loading saved tensors into a module with one clear line when they belong to another architecture (torch's own
error is a multi-line wall)."""

from __future__ import annotations

import torch
from torch import nn

from malsori.errors import MalsoriError

SHOWN = 3  # keys named per kind of mismatch; the rest are counted


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`module.load_state_dict(state)`, or a MalsoriError naming `where`, the missing and unexpected keys and the
    tensors whose shapes differ (saved vs this model's)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} saved vs {list(own[k].shape)} here" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = [f"{what} {_names(keys)}" for what, keys in
                (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)) if keys]
    if problems:
        raise MalsoriError(f"{where}: the saved tensors do not fit this model (another architecture or config?): "
                           + "; ".join(problems))
    module.load_state_dict(state)
