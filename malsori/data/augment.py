"""Waveform augmentation: speed perturbation, synthetic reverberation, additive noise at a chosen SNR.

`Augmenter(cfg)` is a callable `(wave, rng) -> (wave, params)`; the same object serves corpus synthesis (params
are written to the manifest) and on-the-fly augmentation in a training dataset (pass each worker its own rng).
Order: speed → reverb → noise, so the SNR is measured on the signal that is finally heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr

from malsori.errors import ConfigError

NOISE_TYPES = ("white", "pink", "brown", "babble")


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation; all off by default."""

    speed_prob: float = 0.0  # probability of speed perturbation
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.1])  # factors to pick from (>1 = faster, shorter)
    reverb_prob: float = 0.0  # probability of convolving with a synthetic room impulse response
    rt60: tuple[float, float] = (0.15, 0.7)  # reverberation time range in seconds (decay by 60 dB)
    drr_db: tuple[float, float] = (0.0, 12.0)  # direct-to-reverberant energy ratio range in dB (lower = more echo)
    noise_prob: float = 0.0  # probability of adding noise
    noise_types: list[str] = field(default_factory=lambda: ["white", "pink", "brown"])  # from NOISE_TYPES
    snr_db: tuple[float, float] = (5.0, 30.0)  # signal-to-noise ratio range in dB

    def __post_init__(self) -> None:
        for name in ("speed_prob", "reverb_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name}: must be between 0 and 1, got {getattr(self, name)}")
        bad = [t for t in self.noise_types if t not in NOISE_TYPES]
        if bad or not self.noise_types:
            raise ConfigError(f"augment.noise_types: unknown {bad or 'empty list'} (known: {', '.join(NOISE_TYPES)})")
        if any(s <= 0 for s in self.speeds) or not self.speeds:
            raise ConfigError(f"augment.speeds: factors must be positive, got {self.speeds}")
        if self.rt60[0] <= 0 or self.rt60[0] > self.rt60[1]:
            raise ConfigError(f"augment.rt60: need 0 < low <= high, got {self.rt60}")

    @property
    def active(self) -> bool:
        """Whether any augmentation can happen at all."""
        return max(self.speed_prob, self.reverb_prob, self.noise_prob) > 0


def power(wave: np.ndarray) -> float:
    """Mean square of a waveform."""
    return float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0


def colored_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: white (flat), pink (power ∝ 1/f) or brown (power ∝ 1/f²), shaped in the frequency
    domain."""
    white = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0  # no infinite DC gain
        spec /= np.sqrt(f) if kind == "pink" else f
        white = np.fft.irfft(spec, n)
    return (white / np.sqrt(max(power(white), 1e-20))).astype(np.float32)


def babble_noise(
    n: int, sources: list[np.ndarray], rng: np.random.Generator, talkers: tuple[int, int] = (3, 7)
) -> np.ndarray:
    """Unit-power babble: the sum of a few random stretches of other utterances (looped when short)."""
    out = np.zeros(n, dtype=np.float64)
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        src = sources[int(rng.integers(len(sources)))]
        start = int(rng.integers(len(src)))
        piece = np.resize(np.roll(src, -start), n)
        out += piece / np.sqrt(max(power(piece), 1e-20))
    return (out / np.sqrt(max(power(out), 1e-20))).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`wave` + `noise` scaled so that power(wave) / power(scaled noise) is exactly `snr_db`."""
    ps, pn = power(wave), power(noise)
    if ps == 0 or pn == 0:
        return wave
    scale = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (wave + scale * noise).astype(np.float32)


def room_impulse_response(rt60: float, drr_db: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A direct path (1 at t=0) plus an exponentially decaying noise tail reaching -60 dB at `rt60` seconds."""
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-3 * np.log(10) * t / rt60)  # amplitude -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-20))  # tail energy vs direct energy 1
    tail[0] = 1.0
    return tail


def reverberate(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Convolve with `ir` via FFT; the output keeps the input's length and power (the tail past the end is cut)."""
    n = len(wave) + len(ir) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(ir, size), size)[: len(wave)]
    pw, pwet = power(wave), power(wet)
    if pwet > 0:
        wet *= np.sqrt(pw / pwet)
    return wet.astype(np.float32)


def change_speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Speed perturbation (tempo and pitch together, like playing a tape faster): length becomes len/factor."""
    if factor == 1.0:
        return wave
    return soxr.resample(wave, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32, copy=False)


class Augmenter:
    """Random speed / reverb / noise with the probabilities of an AugmentConfig; returns what it did as params."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000, babble: list[np.ndarray] | None = None):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.babble = [np.asarray(b, dtype=np.float32) for b in (babble or []) if len(b)]

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Draw what to do, do it; returns the new wave and the params drawn."""
        params = self.sample(rng)
        return self.apply(wave, params, rng), params

    def sample(self, rng: np.random.Generator) -> dict:
        """Draw which augmentations happen and their settings (no audio needed), e.g.
        {"speed": 1.1, "noise": "pink", "snr_db": 12.5}."""
        cfg, params = self.cfg, {}
        if rng.random() < cfg.speed_prob:
            params["speed"] = float(cfg.speeds[int(rng.integers(len(cfg.speeds)))])
        if rng.random() < cfg.reverb_prob:
            params["rt60"] = round(float(rng.uniform(*cfg.rt60)), 3)
            params["drr_db"] = round(float(rng.uniform(*cfg.drr_db)), 2)
        if rng.random() < cfg.noise_prob:
            kind = cfg.noise_types[int(rng.integers(len(cfg.noise_types)))]
            params.update(noise=kind, snr_db=round(float(rng.uniform(*cfg.snr_db)), 2))
        return params

    def apply(self, wave: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
        """Apply drawn params; `rng` supplies the noise samples and the impulse response."""
        wave = np.asarray(wave, dtype=np.float32)
        if "speed" in params:
            wave = change_speed(wave, params["speed"], self.sample_rate)
        if "rt60" in params:
            wave = reverberate(wave, room_impulse_response(params["rt60"], params["drr_db"], self.sample_rate, rng))
        if "noise" in params:
            if params["noise"] == "babble":
                if not self.babble:
                    raise ConfigError("augment.noise_types: 'babble' needs source utterances (Augmenter(babble=...))")
                noise = babble_noise(len(wave), self.babble, rng)
            else:
                noise = colored_noise(len(wave), params["noise"], rng)
            wave = add_noise(wave, noise, params["snr_db"])
        return wave
