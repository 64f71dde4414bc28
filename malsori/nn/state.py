"""Row selection for the states of step-by-step modules (decoders, scorers): dicts / tuples / lists of tensors whose
first dimension is the hypothesis, reordered and duplicated as a search keeps, drops and copies hypotheses."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

State = Any  # a dict / tuple / list of tensors (first dimension = hypothesis), None entries or other constants


def select_state(state: State, index: Tensor) -> State:
    """Pick (reorder, duplicate) hypotheses: index_select on dim 0 of every tensor in a dict / tuple / list state.

    Nested containers are followed; None (and any non-tensor) stays as it is.
    """
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, dict):
        return {key: select_state(value, index) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(select_state(value, index) for value in state)
    return state


def stack_states(states: Sequence[State]) -> State:
    """The rows of several states of the same structure, one after another (non-tensors are taken from the first)."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.cat(list(states), 0)
    if isinstance(first, dict):
        return {key: stack_states([s[key] for s in states]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(stack_states([s[i] for s in states]) for i in range(len(first)))
    return first
