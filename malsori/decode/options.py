"""`DecodeOptions`: how to search, one object for every model, `Recognizer`, `Stream`, the CLI and the Python API.

    from malsori.decode import DecodeOptions, WeightedScorer
    rec.transcribe("a.wav", DecodeOptions(method="beam", beam_size=8, scorers=(WeightedScorer("lm", lm, 0.3),)))

Fields a model's searches do not use are errors there (`check`), so nothing is silently ignored: a CTC model has no
CTC weight, greedy CTC and transducer searches take no extra scorers, and so on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from malsori.config import bounded, check_ranges
from malsori.decode.scorers import WeightedScorer
from malsori.errors import ConfigError

BUILT_IN_SCORERS = ("att", "ctc", "transducer")  # "ilm" is taken too while ilm_weight > 0 (malsori.decode.ilm)  # the searches' own parts in `Hypothesis.scores`


@dataclass(frozen=True)
class DecodeOptions:
    """The search and its settings; None means "the model's default" where a model has one."""

    method: str = "greedy"  # search: greedy | beam (every model); ctc_greedy | ctc_beam | rescore (attention + CTC head); modified_beam (transducer)
    beam_size: int = bounded(8, ge=1)  # hypotheses kept by the beam methods
    nbest: int = bounded(1, ge=1)  # hypotheses returned best first in the best one's `.nbest` (beam methods)
    length_bonus: float | None = bounded(None)  # added to the score per output label; None = the model's default (attention beam: AttentionConfig.length_bonus), else 0
    ctc_weight: float | None = bounded(None, ge=0, le=1)  # attention models: CTC weight in joint decoding and rescoring, in [0, 1]; None = AttentionConfig.decode_ctc_weight
    max_len_ratio: float | None = bounded(None, gt=0)  # attention models: at most this many labels per encoder frame; None = AttentionConfig.max_len_ratio
    max_len: int | None = bounded(None, ge=1)  # attention models: at most this many labels, whatever the input length (instead of max_len_ratio)
    scorers: tuple[WeightedScorer, ...] = ()  # extra scorers (LM, biasing, ...) with weights, added in every search that takes labels one at a time
    rescorers: tuple[WeightedScorer, ...] = ()  # scorers with weights re-ranking a beam method's n-best afterwards (the search keeps its whole beam)
    ilm_weight: float = bounded(0.0, ge=0)  # transducer and attention models: μ, the weight of the model's internal LM estimate subtracted per label (ILME, malsori.decode.ilm; 0 = off)
    prompt: tuple[int, ...] = bounded((), ge=0)  # token ids read before the output by the label-side models (decoder, prediction network, extra scorers); not returned, not scored

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"decode method: must be a non-empty name, got {self.method!r}")
        check_ranges(self)
        if self.max_len is not None and self.max_len_ratio is not None:
            raise ConfigError("max_len: give max_len or max_len_ratio, not both")
        object.__setattr__(self, "scorers", tuple(self.scorers))
        object.__setattr__(self, "rescorers", tuple(self.rescorers))
        object.__setattr__(self, "prompt", tuple(int(t) for t in self.prompt))
        names = [s.name for s in self.scorers + self.rescorers]
        for field_name in ("scorers", "rescorers"):
            for s in getattr(self, field_name):
                if not isinstance(s, WeightedScorer):
                    raise ConfigError(f"{field_name}: each must be a WeightedScorer(name, scorer, weight), got {type(s).__name__}")
                if s.name in BUILT_IN_SCORERS or names.count(s.name) > 1:
                    raise ConfigError(f"{field_name}: name {s.name!r} is taken (built-in: {', '.join(BUILT_IN_SCORERS)}; "
                                      "names of scorers and rescorers must differ)")
                if not math.isfinite(s.weight):
                    raise ConfigError(f"{field_name}: weight of {s.name!r} must be finite, got {s.weight}")

    def check(self, model: str, methods: tuple[str, ...], unused: dict[str, str], vocab_size: int) -> None:
        """Raise ConfigError unless `method` is one of `methods`, every field named in `unused` (field → why) changes
        nothing (its default; a length bonus of 0; scorers of weight 0 only), and the prompt's ids are below
        `vocab_size`."""
        if self.method not in methods:
            raise ConfigError(f"decode method: unknown '{self.method}' for {model} (known: {', '.join(methods)})")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, why in unused.items():
            value = getattr(self, name)
            if name in ("scorers", "rescorers"):
                neutral = all(s.weight == 0 for s in value)
            else:
                neutral = value == defaults[name] or (name == "length_bonus" and value == 0)
            if not neutral:
                raise ConfigError(f"{name}: not used by {model} with method {self.method} ({why})")
        if any(t >= vocab_size for t in self.prompt):
            raise ConfigError(f"prompt: token ids must be < the vocabulary size {vocab_size}, got {list(self.prompt)}")

    @property
    def search_nbest(self) -> int:
        """Hypotheses a beam method keeps: `nbest`, or its whole beam when rescorers will re-rank them."""
        return max(self.nbest, self.beam_size) if any(s.weight != 0 for s in self.rescorers) else self.nbest
