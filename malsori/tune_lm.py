"""Choosing the LM fusion weights on a dev set: a coordinate search over λ (LM weight), β (word bonus) and,
optionally, μ (internal LM weight), each axis a small grid; the lowest WER wins (CER breaks ties). A manifest whose
name or folder says "test" is refused: weights chosen on the test set make its numbers meaningless."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from malsori.config import bounded, check_ranges
from malsori.data.manifest import Utterance
from malsori.decode.options import DecodeOptions
from malsori.errors import MalsoriError
from malsori.evaluate import score_waves
from malsori.lm_scorers import lm_scorers
from malsori.pretrained import Recognizer

Point = tuple[float, float, float]  # (λ, β, μ)


@dataclass(frozen=True)
class TuneGrid:
    """The values each weight may take; the search starts at the middle λ and β and the first μ."""

    lm_weights: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)  # λ, the LM's weight
    word_bonuses: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)  # β, added per completed word
    ilm_weights: tuple[float, ...] = (0.0,)  # μ, the internal LM's weight (transducer and attention models)
    rounds: int = bounded(3, ge=1)  # passes over the three axes at most (the search stops when a pass changes nothing)

    def __post_init__(self) -> None:
        check_ranges(self)
        for name in ("lm_weights", "word_bonuses", "ilm_weights"):
            values = getattr(self, name)
            if not values or any(not np.isfinite(v) for v in values):
                raise MalsoriError(f"{name}: give at least one finite value, got {list(values)}")
        if min(self.lm_weights) < 0 or min(self.ilm_weights) < 0:
            raise MalsoriError("lm_weights and ilm_weights must be ≥ 0")

    def start(self) -> Point:
        mid = lambda values: sorted(values)[(len(values) - 1) // 2]  # noqa: E731
        return mid(self.lm_weights), mid(self.word_bonuses), self.ilm_weights[0]


@dataclass
class TuneRow:
    """One decoding of the dev set."""

    lm_weight: float  # λ
    word_bonus: float  # β
    ilm_weight: float  # μ
    wer: float  # corpus WER
    cer: float  # corpus CER
    rtf: float  # decoding time / audio time


@dataclass
class TuneResult:
    """The chosen weights, every decoding tried (in order) and the dev set's WER/CER without an LM."""

    best: TuneRow  # the chosen point
    rows: list[TuneRow] = field(default_factory=list)  # every point decoded
    no_lm: TuneRow | None = None  # λ = β = μ = 0


def looks_like_test_set(manifest: str | os.PathLike) -> bool:
    """True when the manifest's file name or folder has a word starting with "test" (test.jsonl, kokoro_test.jsonl,
    speechocean762_test_sample/manifest.jsonl, speech_commands_v002_testset.jsonl)."""
    path = Path(manifest)
    words = [w for name in (path.stem, path.resolve().parent.name) for w in re.split(r"[^a-z0-9]+", name.lower())]
    return any(w.startswith("test") for w in words)


def check_dev_set(manifest: str | os.PathLike) -> None:
    """MalsoriError for a manifest that `looks_like_test_set`."""
    if looks_like_test_set(manifest):
        raise MalsoriError(f"{manifest}: looks like a test set (its name or folder says 'test'); tune the weights on a "
                           "dev set, then score the test set once with them")


def tune_weights(rec: Recognizer, utts: list[Utterance], waves: list[np.ndarray], lm, grid: TuneGrid,
                 method: str = "beam", beam_size: int = 8, batch_size: int = 16, rescore: bool = False,
                 log: Callable[[TuneRow], None] = lambda row: None) -> TuneResult:
    """Coordinate search on the preloaded dev set (`utts`, `waves`): per pass, each axis in turn takes its best value
    with the others fixed. `lm` is an ARPA path, a GPT folder, or one loaded by `malsori.lm_scorers.load_lm`; with
    `rescore` it re-ranks the beam's n-best instead of joining the search."""
    rows: dict[Point, TuneRow] = {}
    def options(lm_w: float, bonus: float, ilm_w: float) -> DecodeOptions:
        lms = lm_scorers(lm, rec.tokenizer, lm_w, bonus) if lm_w or bonus else ()
        return DecodeOptions(method, beam_size, scorers=() if rescore else lms, rescorers=lms if rescore else (),
                             ilm_weight=ilm_w)

    rec.model.check_options(options(max(grid.lm_weights), max(grid.word_bonuses, key=abs) or 1.0, max(grid.ilm_weights)))

    def run(point: Point) -> TuneRow:
        if point not in rows:
            lm_w, bonus, ilm_w = point
            s = score_waves(rec, utts, waves, options(*point), batch_size)
            rows[point] = TuneRow(lm_w, bonus, ilm_w, s.rates.wer, s.rates.cer, s.rtf)
            log(rows[point])
        return rows[point]

    no_lm = run((0.0, 0.0, 0.0))
    point = grid.start()
    axes = (grid.lm_weights, grid.word_bonuses, grid.ilm_weights)
    for _ in range(grid.rounds):
        before = point
        for axis, values in enumerate(axes):
            candidates = [point[:axis] + (v,) + point[axis + 1 :] for v in values]
            point = min(candidates, key=lambda p: (run(p).wer, run(p).cer))
        if point == before:
            break
    return TuneResult(rows[point], list(rows.values()), no_lm)
