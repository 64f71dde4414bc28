"""The interface every synthesis engine gives the corpus planner (malsori.data.synth), and what engines share.

An engine names its voices and splits them into train/dev/test, draws one utterance's voice (or a blend of two)
and prosody from the planner's generator, and speaks one planned utterance as 16 kHz float32 audio: trimmed,
padded with the drawn silences and leveled. eSpeak NG is built in; Kokoro and Piper are optional extras whose
packages are imported only when used, so that their absence is one clear error (EngineUnavailable).
"""

from __future__ import annotations

import abc
import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from malsori.data.synth_config import ENGINES, SynthConfig
from malsori.errors import ConfigError
from malsori.text import normalize

SAMPLE_RATE = 16000  # every engine's output rate


class Engine(abc.ABC):
    """A synthesizer the planner drives. It is pickled into worker processes, so subclasses load libraries and
    models lazily, on the first `synthesize`, into `self._lazy`, which stays in its process."""

    name = ""
    chars_per_second = 16.0  # characters of normalized text spoken per second at speed 1 (sizes --hours corpora)

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self._lazy: dict[str, Any] = {}  # loaded libraries, sessions, tables

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_lazy": {}}

    def check(self) -> None:
        """Raise EngineUnavailable, naming the pip/npm command, when a package or voice file is missing."""

    def prepare(self, workdir: Path) -> None:
        """Run once in the main process before workers start (shared files may be put in `workdir`)."""

    @abc.abstractmethod
    def split_voices(self) -> dict[str, list]:
        """The voices of each split, from the config and its seed; dev and test get voices train never has
        (unless the engine has only one)."""

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator, split: str, voices: list) -> tuple[Any, Any]:
        """(voice, params) of one utterance of `split`, drawn from `rng` among the split's `voices`."""

    @abc.abstractmethod
    def default_params(self) -> Any:
        """Plain prosody, for utterances that are not planned (babble noise)."""

    @abc.abstractmethod
    def synthesize(self, text: str, voice: Any, params: Any) -> np.ndarray:
        """Speak `text` (already in spoken form: see `reading`) as 16 kHz float32, trimmed and leveled."""

    def reading(self, text: str) -> str:
        """What the engine reads for a written sentence: its normalized words, with the clause punctuation."""
        return clause_reading(text)

    def estimate_seconds(self, spoken: str) -> float:
        """Rough duration of normalized text at the middle of the speed range, silences included."""
        return len(spoken) / (self.chars_per_second * sum(self.cfg.speed) / 2) + sum(self.cfg.silence)

    def notes(self) -> dict:
        """Facts about the corpus worth keeping beside it (synth_stats.json)."""
        return {}


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass of an engine name (its module is light: optional packages load on use)."""
    if name not in ENGINES:
        raise ConfigError(f"engine: must be one of {', '.join(ENGINES)}, got {name!r}")
    module = importlib.import_module(f"malsori.data.tts.{name}")
    return getattr(module, f"{name.capitalize()}Engine")


def make_engine(cfg: SynthConfig) -> Engine:
    """The engine `cfg.engine` names, set up with `cfg` (nothing is loaded yet)."""
    return engine_class(cfg.engine)(cfg)


@dataclass(frozen=True)
class Speaker:
    """A neural engine's voice: one voice pack, or a blend of two voices' style vectors."""

    voice: str  # voice name, e.g. "af_heart"
    mix_with: str = ""  # second voice of a blend; "" = a single voice
    mix_weight: float = 1.0  # weight of `voice` in the blend (`mix_with` gets 1 - weight)

    @property
    def name(self) -> str:
        return f"mix:{self.voice}+{self.mix_with}@{self.mix_weight:.2f}" if self.mix_with else self.voice


def hold_out(voices: list, cfg: SynthConfig, what: str) -> dict[str, list]:
    """Split voices (already in their seeded order): dev takes the first `dev_voices`, test the next
    `test_voices`, train the rest; `what` names the voices in the error."""
    n_dev = cfg.dev_voices if cfg.num_dev else 0
    n_test = cfg.test_voices if cfg.num_test else 0
    if (cfg.num_dev and n_dev < 1) or (cfg.num_test and n_test < 1) or n_dev + n_test >= len(voices):
        raise ConfigError(f"dev_voices/test_voices: need at least 1 each and fewer than {len(voices)} in all ({what})")
    return {"dev": voices[:n_dev], "test": voices[n_dev: n_dev + n_test], "train": voices[n_dev + n_test:]}


def draw_delivery(rng: np.random.Generator, cfg: SynthConfig) -> dict:
    """Speed, silences and peak level of one utterance (the neural engines' shared prosody)."""
    return dict(
        speed=round(float(rng.uniform(*cfg.speed)), 3),
        lead_silence=round(float(rng.uniform(*cfg.silence)), 3),
        trail_silence=round(float(rng.uniform(*cfg.silence)), 3),
        peak=round(float(rng.uniform(*cfg.peak)), 3),
    )


def plain_reading(text: str) -> str:
    """The normalized words with a final "." or "?" (for question intonation)."""
    return normalize(text) + ("?" if text.rstrip().endswith("?") else ".")


_CLAUSE_BREAK = re.compile(r"(?<=[,;:.!?…—])[\"'”’)\]]*\s+")  # after clause punctuation (not in 7:30 or 3.5)
_MARK = re.compile(r"([,;:.!?…—])[\"'”’)\]]*$")  # the punctuation a clause ends with, closing quotes aside


def clause_reading(text: str) -> str:
    """The normalized words of `text` with its clause punctuation (",", ";", ":", ".", "?", "!"), so that an engine
    pauses and intones where the writer did. Each clause goes through the shared normalizer; when that would
    give other words than normalizing the whole sentence, the plain reading is used instead."""
    clauses, carry = [], ""
    parts = _CLAUSE_BREAK.split(text.strip())
    for k, part in enumerate(parts):
        part = carry + part
        if part.endswith(".") and k + 1 < len(parts) and normalize(part) != normalize(part[:-1]):
            carry = part + " "  # the point of an abbreviation ("Dr. Smith"), not the end of a clause
            continue
        carry, words = "", normalize(part)
        if words:
            m = _MARK.search(part)
            mark = {"…": ".", "—": ","}.get(m.group(1), m.group(1)) if m else ","
            clauses.append(words + mark)
    if not clauses or " ".join(c[:-1] for c in clauses) != normalize(text):
        return plain_reading(text)
    if clauses[-1][-1] not in ".?!":
        clauses[-1] = clauses[-1][:-1] + "."
    return " ".join(clauses)


def trim_and_level(wave: np.ndarray, sample_rate: int, lead: float, trail: float, *, level_db: float | None = None,
                   peak: float | None = None, floor_db: float = -45.0) -> np.ndarray:
    """Cut silence outside the speech (10 ms frames above `floor_db` relative to the loudest), pad `lead` and
    `trail` seconds of silence, scale the speech's RMS to `level_db` dBFS or its peak to `peak`, and keep the
    peak below 0.99."""
    hop = sample_rate // 100
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop).astype(np.float64)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.flatnonzero(energy > energy.max() + floor_db) if len(frames) else np.zeros(0, int)
    if len(active) == 0 or not np.any(frames[active]):
        return np.zeros(int((lead + trail) * sample_rate), np.float32)
    speech = wave[max(0, active[0] * hop - hop): (active[-1] + 2) * hop]
    if peak is None:
        rms = math.sqrt(float(np.mean(frames[active] ** 2)))
        speech = speech * (10 ** (level_db / 20) / max(rms, 1e-9))
    else:
        speech = speech * (peak / max(float(np.abs(speech).max()), 1e-9))
    top = float(np.abs(speech).max())
    if top > 0.99:
        speech *= 0.99 / top
    return np.concatenate([np.zeros(int(lead * sample_rate)), speech, np.zeros(int(trail * sample_rate))]).astype(
        np.float32)
