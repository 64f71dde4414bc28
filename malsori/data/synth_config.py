"""What corpus to synthesize (`SynthConfig`) and each engine's defaults: below both the planner (synth.py) and the
engines (tts/), which read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from malsori.config import bounded, check_ranges, from_dict
from malsori.data.augment import AugmentConfig
from malsori.errors import ConfigError

SPLITS = ("train", "dev", "test")
ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {  # per engine, the values of the SynthConfig fields left at None
    "espeak": dict(dev_voices=12, test_voices=12, silence=(0.05, 0.4)),
    "kokoro": dict(dev_voices=3, test_voices=4, silence=(0.05, 0.3)),
    "piper": dict(dev_voices=0, test_voices=0, silence=(0.05, 0.3)),
}
ENGINES = tuple(ENGINE_DEFAULTS)  # espeak is built in; kokoro and piper are optional extras


@dataclass
class SynthConfig:
    """What corpus to synthesize; everything but `workers`, `strict` and `voices_dir` is saved and must match when
    resuming. Fields marked eSpeak, Kokoro or Piper are read by that engine only; None = the engine's default."""

    engine: str = "espeak"  # synthesis engine: espeak (built in), kokoro or piper (optional extras)
    num_train: int = bounded(2000, ge=0)  # train utterances (unused when train_hours > 0)
    num_dev: int = bounded(200, ge=0)  # dev utterances
    num_test: int = bounded(200, ge=0)  # test utterances
    train_hours: float = bounded(0.0, ge=0)  # > 0: about this many hours of train audio instead of num_train
    seed: int = bounded(0, ge=0)  # one seed for sentences, voices, parameters and augmentation
    text_files: list[str] = field(default_factory=list)  # sentence files (.txt / .txt.gz, one a line)
    use_generator: bool | None = None  # add built-in sentences; None = only when no text files are given
    domains: list[str] = field(default_factory=list)  # built-in sentence domains (empty = all)
    max_words: int = bounded(40, ge=1)  # longer sentences are dropped
    accents: list[str] = field(default_factory=list)  # eSpeak: English accents to use (empty = all found)
    variants: list[str] = field(default_factory=list)  # eSpeak: voice variants to use (empty = default_variants())
    kokoro_voices: list[str] = field(default_factory=list)  # Kokoro: voice packs to use (empty = all 54)
    voices_dir: str = ""  # Kokoro: folder of voice packs (npm kokoro-js voices/); "" = $MALSORI_KOKORO_VOICES
    dev_voices: int | None = bounded(None, ge=0)  # voices reserved for dev (eSpeak: accent+variant combinations; default 12, Kokoro 3)
    test_voices: int | None = bounded(None, ge=0)  # voices reserved for test (default eSpeak 12, Kokoro 4)
    rate: tuple[int, int] = bounded((130, 240), ge=80, le=450)  # eSpeak: speaking rate range, words per minute
    pitch: tuple[int, int] = bounded((20, 80), ge=0, le=100)  # eSpeak: base pitch range, 0–100
    pitch_range: tuple[int, int] = bounded((15, 90), ge=0, le=100)  # eSpeak: pitch variation range, 0–100
    volume: tuple[int, int] = bounded((70, 140), ge=0, le=200)  # eSpeak: amplitude range
    word_gap: tuple[int, int] = bounded((0, 3), ge=0)  # eSpeak: extra pause between words, 10 ms units
    level_db: tuple[float, float] = bounded((-32.0, -16.0), le=0)  # eSpeak: speech RMS level range, dBFS
    speed: tuple[float, float] = bounded((0.85, 1.2), gt=0)  # Kokoro, Piper: speaking speed factor range (1 = the voice's pace)
    peak: tuple[float, float] = bounded((0.3, 0.9), gt=0, le=1)  # Kokoro, Piper: peak level range of the speech
    mix_prob: float = bounded(0.4, ge=0, le=1)  # Kokoro: share of train utterances spoken by a blend of two train voices
    mix_weight: tuple[float, float] = bounded((0.2, 0.8), ge=0, le=1)  # Kokoro: weight range of the first voice in a blend
    noise_scale: tuple[float, float] = bounded((0.5, 0.8), ge=0)  # Piper: voice variation range (the voice's own: 0.667)
    noise_w: tuple[float, float] = bounded((0.6, 1.0), ge=0)  # Piper: rhythm variation range (the voice's own: 0.8)
    silence: tuple[float, float] | None = bounded(None, ge=0)  # lead, trail silence range, s (eSpeak .05–.4, others .05–.3)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augmentation applied at synthesis time
    augment_splits: list[str] = field(default_factory=lambda: ["train"])  # splits that get augmentation
    workers: int = bounded(0, ge=0)  # processes (0 = all CPUs); does not change the output
    strict: bool = False  # a bad line in a text file is an error instead of being skipped

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = from_dict(AugmentConfig, self.augment, "augment")
        if self.engine not in ENGINE_DEFAULTS:
            raise ConfigError(f"engine: must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name, value in ENGINE_DEFAULTS[self.engine].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        check_ranges(self)  # also built directly in Python (the demo, the comparison, tests)
        for name, only in (("accents", "espeak"), ("variants", "espeak"), ("kokoro_voices", "kokoro")):
            if getattr(self, name) and self.engine != only:
                raise ConfigError(f"{name}: only for engine {only}, not {self.engine}")
        if not set(self.augment_splits) <= set(SPLITS):
            raise ConfigError(f"augment_splits: must be among {', '.join(SPLITS)}, got {self.augment_splits}")
        for name in ("rate", "pitch", "pitch_range", "volume", "word_gap", "silence", "level_db", "speed", "peak",
                     "mix_weight", "noise_scale", "noise_w"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"{name}: range low {lo} is above high {hi}")
