"""Extra scorers (shallow fusion) and the length bonus in the searches that are not already a sum of weighted scorers.

Each label a hypothesis gains adds `Σ_s w_s · log p_s(label | prefix) + length_bonus` to its score. Two helpers,
one per way a search holds its hypotheses:

- `PrefixFusion`: frame-synchronous searches of one utterance (CTC prefix beam, transducer beam and modified beam),
  whose hypotheses are label prefixes that may stay unchanged for many frames. Scorer states are kept per prefix
  (any hashable key), next-label scores only for the prefixes the search is extending (memory stays bounded on
  long inputs with large vocabularies); both are computed in one batch for all prefixes that need them.
- `RowFusion`: greedy searches, where each of N rows takes exactly one label per step (attention greedy, MoChA).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    steps: tuple[float, ...] = ()  # each scorer's own log-prob of `token` after `parent`
    states: list[State] | None = None  # per scorer, its scored 1-row state (None until first prepared)
    parts: list[list[float]] | None = None  # per scorer, log-probs of every next label (while being extended)
    gain: list[float] | None = None  # weighted next-label scores + length bonus (while being extended)
    final: tuple[float, ...] | None = None  # per scorer, what ending here adds (`Scorer.final_score`; once asked)


class PrefixFusion:
    """Extra scorers over the label prefixes of one utterance, for frame-synchronous searches.

    `prepare(keys)` makes the next-label scores of the prefixes `keys` (the ones the search is about to extend)
    available, scoring those not scored yet in one batch, and forgets those of every other prefix; `gain(key)` gives
    them, weighted, plus the length bonus; `add(key, parent, token)` registers a prefix, whose total is known at once
    from its (prepared) parent; `total(key)` is a prefix's fused score, `parts(key)` each scorer's own sum over its
    labels. memory [1, T, D] (or None) is passed to the scorers for every prefix; `root` is the empty prefix's key.
    `end(keys)` adds the scorers' final scores (the searches have no eos): a finished prefix ranks by total + end.
    """

    def __init__(self, scorers: Sequence[WeightedScorer], vocab_size: int, root: Hashable, length_bonus: float = 0.0,
                 prompt: Sequence[int] = (), memory: Tensor | None = None, memory_lens: Tensor | None = None) -> None:
        self.scorers = active(scorers)
        self.names = [s.name for s in self.scorers]
        self.vocab_size, self.length_bonus = vocab_size, length_bonus
        self.memory, self.memory_lens = memory, memory_lens
        self.prefixes: dict[Hashable, _Prefix] = {root: _Prefix(None, -1, 0.0)}
        self.extending: list[Hashable] = []  # the prefixes whose next-label scores are kept
        self._score([root], [s.scorer.init_state(1, memory, memory_lens, prompt) for s in self.scorers])
        self.extending = [root]

    def add(self, key: Hashable, parent: Hashable, token: int) -> None:
        """Register prefix `key` = `parent` (prepared) + `token`; nothing is run."""
        if key not in self.prefixes:
            p = self.prefixes[parent]
            self.prefixes[key] = _Prefix(parent, token, p.total + p.gain[token], tuple(part[token] for part in p.parts))

    def prepare(self, keys: Sequence[Hashable]) -> None:
        """Make the next-label scores of `keys` available (one batch per scorer for those not scored yet); forget
        those of every other prefix."""
        keys = list(dict.fromkeys(keys))
        if keys == self.extending:
            return
        for key in set(self.extending) - set(keys):
            self.prefixes[key].parts = self.prefixes[key].gain = None
        self.extending = keys
        new = [k for k in keys if self.prefixes[k].states is None]
        again = [k for k in keys if self.prefixes[k].gain is None and self.prefixes[k].states is not None]
        if new:
            entries = [self.prefixes[k] for k in new]
            tokens = torch.tensor([e.token for e in entries], device=self._device())
            rows = torch.arange(len(new), device=tokens.device)
            self._score(new, [s.scorer.extend(stack_states([self.prefixes[e.parent].states[i] for e in entries]), rows, tokens)
                              for i, s in enumerate(self.scorers)])
        if again:  # scored before, forgotten since: scoring a scored state again gives the same scores
            self._score(again, [stack_states([self.prefixes[k].states[i] for k in again]) for i in range(len(self.scorers))])

    def gain(self, key: Hashable) -> list[float]:
        """Per next label: Σ_s w_s · log p_s(label | prefix) + length bonus (the prefix must be prepared)."""
        return self.prefixes[key].gain

    def total(self, key: Hashable) -> float:
        return self.prefixes[key].total

    def end(self, keys: Sequence[Hashable]) -> dict[Hashable, float]:
        """Per key, what ending the output there adds: Σ_s w_s · final score of s (`Scorer.final_score`; 0 where a
        scorer has none). `parts` then include the final scores."""
        todo = [k for k in dict.fromkeys(keys) if self.prefixes[k].final is None]
        if todo and self.scorers:
            self.prepare(todo)
            finals = []
            for i, s in enumerate(self.scorers):
                out = s.scorer.final_score(stack_states([self.prefixes[k].states[i] for k in todo]))
                finals.append([0.0] * len(todo) if out is None else out.double().tolist())
            for j, k in enumerate(todo):
                self.prefixes[k].final = tuple(f[j] for f in finals)
        return {k: sum(s.weight * f for s, f in zip(self.scorers, self.prefixes[k].final or ())) for k in keys}

    def parts(self, key: Hashable) -> dict[str, float]:
        """Each scorer's own (unweighted) log-probability of the prefix's labels (and of ending, after `end`)."""
        node = self.prefixes[key]
        sums = list(node.final) if node.final is not None else [0.0] * len(self.scorers)
        while node.parent is not None:
            sums = [acc + step for acc, step in zip(sums, node.steps)]
            node = self.prefixes[node.parent]
        return dict(zip(self.names, sums))

    def _device(self) -> torch.device:
        return self.memory.device if self.memory is not None else torch.device("cpu")

    def _score(self, keys: list[Hashable], states: list[State]) -> None:
        """Score `states` (per scorer, one row per key) and keep each key's scored row and next-label scores."""
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

