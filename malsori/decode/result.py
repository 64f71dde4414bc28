"""The one result type every search returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Hypothesis:
    """One decoded token sequence with its log-probability, emission frames and (on the best one) the n-best list."""

    tokens: list[int]  # token ids, blanks removed
    score: float  # log-probability of the sequence under the search (higher is better)
    token_frames: list[int] = field(default_factory=list)  # encoder frame at which each token was emitted
    text: str = ""  # detokenized text, filled in by the caller that owns the tokenizer
    nbest: list[Hypothesis] = field(default_factory=list)  # best-first alternatives (this one first); may be empty
    scores: dict[str, float] = field(default_factory=dict)  # per-scorer log-probabilities (beam search over scorers)
