"""Extra scorers inside the searches that are not a weighted sum of scorers by construction (shallow fusion).

Each label a hypothesis gains adds `Σ_s w_s · log p_s(label | prefix) + length_bonus` to its score. Two helpers,
one per way a search holds its hypotheses:

- `PrefixFusion`: frame-synchronous searches of one utterance (CTC prefix beam, transducer beam and modified beam),
  whose hypotheses are label prefixes that may stay unchanged for many frames. Scorer states and next-label scores
  are kept per prefix (any hashable key) and computed once, in one batch for all prefixes that need them.
- `RowFusion`: greedy searches, where each of N rows takes exactly one label per step (attention greedy, MoChA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch
from torch import Tensor

from malsori.decode.scorers import PartialScorer, WeightedScorer
from malsori.errors import ConfigError
from malsori.nn.state import State, stack_states


def active(scorers: Sequence[WeightedScorer]) -> list[WeightedScorer]:
    """The scorers a search runs: weight 0 means off. Partial scorers need the attention beam search."""
    kept = [s for s in scorers if s.weight != 0]
    for s in kept:
        if isinstance(s.scorer, PartialScorer):
            raise ConfigError(f"scorers: {s.name!r} is a partial scorer, which only the attention beam search can use")
    return kept


@dataclass
class _Prefix:
    """What `PrefixFusion` knows of one prefix."""

    parent: Hashable  # the prefix without its newest label (None for the root)
    token: int  # its newest label (-1 for the root)
    total: float  # Σ over its labels of the weighted scores + length bonus
    states: list[State] | None = None  # per scorer, 1-row scored state (None until `prepare`)
    parts: list[list[float]] = field(default_factory=list)  # per scorer, log-probs of every next label
    gain: list[float] = field(default_factory=list)  # weighted next-label scores + length bonus


class PrefixFusion:
    """Extra scorers over the label prefixes of one utterance, for frame-synchronous searches.

    `add(key, parent, token)` registers a prefix (its total is known at once from its parent's scores);
    `prepare(keys)` scores, in one batch, the registered prefixes whose next-label scores are not known yet (the
    search calls it for the prefixes it is about to extend); `gain(key)` gives those scores, weighted, plus the
    length bonus; `total(key)` the prefix's fused score, `parts(key)` each scorer's own sum over its labels.
    memory [1, T, D] (or None) is passed to the scorers for every prefix; `root` is the empty prefix's key.
    """

    def __init__(self, scorers: Sequence[WeightedScorer], vocab_size: int, root: Hashable, length_bonus: float = 0.0,
                 prompt: Sequence[int] = (), memory: Tensor | None = None, memory_lens: Tensor | None = None) -> None:
        self.scorers = active(scorers)
        self.names = [s.name for s in self.scorers]
        self.vocab_size, self.length_bonus = vocab_size, length_bonus
        self.memory, self.memory_lens = memory, memory_lens
        self.prefixes: dict[Hashable, _Prefix] = {root: _Prefix(None, -1, 0.0)}
        self.prefixes[root].states = [s.scorer.init_state(1, memory, memory_lens, prompt) for s in self.scorers]
        self._score([root], self.prefixes[root].states)

    def add(self, key: Hashable, parent: Hashable, token: int) -> None:
        """Register prefix `key` = `parent` (prepared) + `token`; nothing is run."""
        if key not in self.prefixes:
            self.prefixes[key] = _Prefix(parent, token, self.prefixes[parent].total + self.prefixes[parent].gain[token])

    def prepare(self, keys: Sequence[Hashable]) -> None:
        """Score the next labels of the prefixes `keys` that are not scored yet, all in one batch per scorer."""
        todo = [k for k in dict.fromkeys(keys) if self.prefixes[k].states is None]
        if not todo:
            return
        if not self.scorers:  # a length bonus alone
            self._score(todo, [])
            return
        entries = [self.prefixes[k] for k in todo]
        tokens = torch.tensor([e.token for e in entries], device=self._device())
        rows = torch.arange(len(todo), device=tokens.device)
        states = []
        for i, s in enumerate(self.scorers):
            parents = stack_states([self.prefixes[e.parent].states[i] for e in entries])
            states.append(s.scorer.extend(parents, rows, tokens))
        self._score(todo, states)

    def gain(self, key: Hashable) -> list[float]:
        """Per next label: Σ_s w_s · log p_s(label | prefix) + length bonus (the prefix must be prepared)."""
        return self.prefixes[key].gain

    def total(self, key: Hashable) -> float:
        return self.prefixes[key].total

    def parts(self, key: Hashable) -> dict[str, float]:
        """Each scorer's own (unweighted) log-probability of the prefix's labels."""
        sums = [0.0] * len(self.scorers)
        node = self.prefixes[key]
        while node.parent is not None:
            parent = self.prefixes[node.parent]
            sums = [acc + part[node.token] for acc, part in zip(sums, parent.parts)]
            node = parent
        return dict(zip(self.names, sums))

    def _device(self) -> torch.device:
        return self.memory.device if self.memory is not None else torch.device("cpu")

    def _score(self, keys: list[Hashable], states: list[State]) -> None:
        """Score `states` (per scorer, one row per key) and keep each key's scored row and scores."""
        n = len(keys)
        memory = None if self.memory is None else self.memory.expand(n, -1, -1)
        lens = None if self.memory_lens is None else self.memory_lens.expand(n)
        parts, scored = [], []
        for s, state in zip(self.scorers, states):
            log_probs, state = s.scorer.score(state, memory, lens)
            parts.append(log_probs.double())
            scored.append(state)
        gains = sum(s.weight * p for s, p in zip(self.scorers, parts)) + self.length_bonus if parts else None
        for j, key in enumerate(keys):
            entry = self.prefixes[key]
            row = torch.tensor([j], device=parts[0].device) if parts else None
            entry.states = [s.scorer.select_state(st, row) for s, st in zip(self.scorers, scored)]
            entry.parts = [p[j].tolist() for p in parts]
            entry.gain = gains[j].tolist() if gains is not None else [self.length_bonus] * self.vocab_size


class RowFusion:
    """Extra scorers (at least one of non-zero weight) over N rows that each take one label per step (greedy).

    `next()` → (Σ_s w_s · log p_s(label | row's prefix) [N, V], each scorer's log-probs [N, S, V]), computed once
    per step; `extend(tokens [N])` adds each row's label. The greedy search adds the length bonus itself.
    """

    def __init__(self, scorers: Sequence[WeightedScorer], n: int, prompt: Sequence[int] = (),
                 memory: Tensor | None = None, memory_lens: Tensor | None = None) -> None:
        self.scorers = active(scorers)
        if not self.scorers:
            raise ValueError("RowFusion needs a scorer of non-zero weight")
        self.names = [s.name for s in self.scorers]
        self.memory, self.memory_lens = memory, memory_lens
        self.states = [s.scorer.init_state(n, memory, memory_lens, prompt) for s in self.scorers]
        self.rows = torch.arange(n, device=memory.device if memory is not None else None)
        self._next: tuple[Tensor, Tensor] | None = None

    def next(self) -> tuple[Tensor, Tensor]:
        if self._next is None:
            parts = []
            for i, s in enumerate(self.scorers):
                log_probs, self.states[i] = s.scorer.score(self.states[i], self.memory, self.memory_lens)
                parts.append(log_probs)
            parts_t = torch.stack(parts, 1)  # [N, S, V]
            weights = torch.tensor([s.weight for s in self.scorers], dtype=parts_t.dtype, device=parts_t.device)
            self._next = (parts_t * weights[:, None]).sum(1), parts_t
        return self._next

    def extend(self, tokens: Tensor) -> None:
        self.next()
        self.states = [s.scorer.extend(st, self.rows.to(tokens.device), tokens) for s, st in zip(self.scorers, self.states)]
        self._next = None

