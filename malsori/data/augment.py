"""Waveform augmentation that bridges clean synthetic speech and real recordings: speed, rooms, noise, channels.

`Augmenter(cfg)` is a callable `(wave, rng) -> (wave, params)`; the same object serves corpus synthesis (params
are written to the manifest) and on-the-fly augmentation in a training dataset (each item draws from its own
seeded rng, so an epoch replays exactly). Order follows the path of sound: speed (the talker) → room (reverb) →
noise (the room's other sources) → channel (band limit, codec) → gain and clipping (the recorder), so the SNR is
measured on the signal that reaches the microphone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from malsori.config import bounded, check_ranges
from malsori.errors import ConfigError

NOISE_TYPES = ("white", "pink", "brown", "babble", "file")
CODECS = ("mulaw", "opus", "mp3")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation; all off by default."""

    speed_prob: float = bounded(0.0, ge=0, le=1)  # probability of speed perturbation
    speeds: list[float] = bounded([0.9, 1.1], gt=0)  # factors to pick from (>1 = faster, shorter)
    reverb_prob: float = bounded(0.0, ge=0, le=1)  # probability of convolving with a synthetic room impulse response
    rt60: tuple[float, float] = bounded((0.15, 0.7), gt=0)  # reverberation time range in seconds (decay by 60 dB)
    drr_db: tuple[float, float] = bounded((0.0, 12.0))  # direct-to-reverberant energy ratio range in dB (lower = more echo)
    noise_prob: float = bounded(0.0, ge=0, le=1)  # probability of adding noise
    noise_types: list[str] = field(default_factory=lambda: ["white", "pink", "brown"])  # from NOISE_TYPES
    snr_db: tuple[float, float] = bounded((5.0, 30.0))  # signal-to-noise ratio range in dB
    noise_dir: str = ""  # folder of noise recordings for noise type "file" (searched recursively)
    rir_dir: str = ""  # folder of measured room impulse responses; when set, reverb uses them instead of synthetic rooms
    babble_utts: int = bounded(32, ge=1)  # training utterances (evenly spaced) loaded as babble talkers for noise type "babble"
    bandlimit_prob: float = bounded(0.0, ge=0, le=1)  # probability of a band limit: telephone band or a random low-pass
    lowpass_hz: tuple[float, float] = bounded((3000.0, 7000.0), gt=0, lt=8000)  # low-pass cutoff range (a telephone band is 300-3400 Hz)
    telephone_share: float = bounded(0.3, ge=0, le=1)  # share of band limits that are the telephone band instead of a low-pass
    codec_prob: float = bounded(0.0, ge=0, le=1)  # probability of a lossy codec round trip
    codecs: list[str] = field(default_factory=lambda: ["mulaw", "opus", "mp3"])  # from CODECS (mulaw = G.711 at 8 kHz)
    gain_prob: float = bounded(0.0, ge=0, le=1)  # probability of a level change
    gain_db: tuple[float, float] = bounded((-20.0, 10.0))  # level change range in dB; samples beyond ±1 are clipped, as a recorder does

    def __post_init__(self) -> None:
        check_ranges(self)  # also built directly in Python (synthesis, tests), not only by from_dict
        bad = [t for t in self.noise_types if t not in NOISE_TYPES]
        if bad or not self.noise_types:
            raise ConfigError(f"augment.noise_types: unknown {bad or 'empty list'} (known: {', '.join(NOISE_TYPES)})")
        if not self.speeds:
            raise ConfigError("augment.speeds: no speed factors given")
        for name in ("rt60", "drr_db", "snr_db", "lowpass_hz", "gain_db"):
            if getattr(self, name)[0] > getattr(self, name)[1]:
                raise ConfigError(f"augment.{name}: need low <= high, got {list(getattr(self, name))}")
        bad = [c for c in self.codecs if c not in CODECS]
        if bad or not self.codecs:
            raise ConfigError(f"augment.codecs: unknown {bad or 'empty list'} (known: {', '.join(CODECS)})")
        if "file" in self.noise_types and not self.noise_dir:
            raise ConfigError("augment.noise_types: 'file' needs augment.noise_dir")
        for name in ("noise_dir", "rir_dir"):
            if getattr(self, name) and not Path(getattr(self, name)).is_dir():
                raise ConfigError(f"augment.{name}: {getattr(self, name)} is not a folder")

    @property
    def active(self) -> bool:
        """Whether any augmentation can happen at all."""
        return max(self.speed_prob, self.reverb_prob, self.noise_prob, self.bandlimit_prob, self.codec_prob, self.gain_prob) > 0


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


def band_limit(wave: np.ndarray, low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    """Zero every frequency outside [low_hz, high_hz] (a brick-wall band-pass in the frequency domain); length kept."""
    spec = np.fft.rfft(wave)
    f = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    spec[(f < low_hz) | (f > high_hz)] = 0
    return np.fft.irfft(spec, len(wave)).astype(np.float32)


def mulaw_round_trip(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """G.711-style telephone channel: resample to 8 kHz, 8-bit μ-law (μ = 255) quantization, back to `sample_rate`."""
    mu = 255.0
    x = np.clip(resample_to(wave, sample_rate, 8000), -1.0, 1.0)
    code = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) + 1) / 2 * mu)  # 0 … 255
    y = (code / mu) * 2 - 1
    y = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return _fit(resample_to(y.astype(np.float32), 8000, sample_rate), len(wave))


def codec_round_trip(wave: np.ndarray, codec: str, sample_rate: int, quality: float) -> np.ndarray:
    """Encode and decode in memory through libsndfile: Opus (Ogg) or MP3; `quality` in [0, 1] maps to the codec's
    compression level (1 = smallest file, lowest bitrate). Length kept (codec delay trimmed or padded)."""
    if codec == "mulaw":
        return mulaw_round_trip(wave, sample_rate)
    fmt, subtype = {"opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}[codec]
    if codec == "mp3":
        quality = min(quality, 0.99)  # libsndfile's LAME refuses compression level 1.0 at 16 kHz
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype, compression_level=quality)
    buf.seek(0)
    out, sr = sf.read(buf, dtype="float32")
    return _fit(resample_to(out, sr, sample_rate), len(wave))


def resample_to(wave: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """soxr resampling (a no-op at equal rates)."""
    if orig_sr == sample_rate:
        return wave
    return soxr.resample(wave, orig_sr, sample_rate, quality="HQ").astype(np.float32, copy=False)


def _fit(wave: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad to exactly n samples."""
    return wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))


def read_folder(folder: str, sample_rate: int) -> list[np.ndarray]:
    """Every audio file below `folder` as mono float32 at `sample_rate` (noise recordings, impulse responses)."""
    from malsori.audio import load_audio

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    return [load_audio(p, sample_rate) for p in files]


class Augmenter:
    """Random speed / reverb / noise / band limit / codec / gain with the probabilities of an AugmentConfig; returns
    what it did as params."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000, babble: list[np.ndarray] | None = None):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.babble = [np.asarray(b, dtype=np.float32) for b in (babble or []) if len(b)]
        self.noises = read_folder(cfg.noise_dir, sample_rate) if cfg.noise_dir else []
        self.rirs = [r / max(float(np.abs(r).max()), 1e-9) for r in read_folder(cfg.rir_dir, sample_rate)] if cfg.rir_dir else []

    @classmethod
    def for_training(cls, cfg: AugmentConfig, utterances: list, seed: int = 0) -> "Augmenter":
        """An augmenter whose babble talkers are `cfg.babble_utts` evenly spaced training utterances (unreadable
        ones skipped) when babble noise is asked for."""
        from malsori.data.dataset import load_utterance_audio
        from malsori.errors import AudioError

        babble = []
        if "babble" in cfg.noise_types and cfg.noise_prob > 0:
            n = max(1, len(utterances) // cfg.babble_utts)
            for u in utterances[seed % n :: n][: cfg.babble_utts]:
                try:
                    babble.append(load_utterance_audio(u))
                except AudioError:
                    continue
        return cls(cfg, babble=babble)

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
            if self.rirs:
                params["rir"] = int(rng.integers(len(self.rirs)))
            else:
                params["rt60"] = round(float(rng.uniform(*cfg.rt60)), 3)
                params["drr_db"] = round(float(rng.uniform(*cfg.drr_db)), 2)
        if rng.random() < cfg.noise_prob:
            kind = cfg.noise_types[int(rng.integers(len(cfg.noise_types)))]
            params.update(noise=kind, snr_db=round(float(rng.uniform(*cfg.snr_db)), 2))
        if rng.random() < cfg.bandlimit_prob:
            if rng.random() < cfg.telephone_share:
                params["band"] = [300.0, 3400.0]
            else:
                params["band"] = [0.0, round(float(rng.uniform(*cfg.lowpass_hz)))]
        if rng.random() < cfg.codec_prob:
            params["codec"] = cfg.codecs[int(rng.integers(len(cfg.codecs)))]
            params["codec_quality"] = round(float(rng.uniform(0.5, 1.0)), 2)
        if rng.random() < cfg.gain_prob:
            params["gain_db"] = round(float(rng.uniform(*cfg.gain_db)), 2)
        return params

    def apply(self, wave: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
        """Apply drawn params; `rng` supplies the noise samples and the impulse response."""
        wave = np.asarray(wave, dtype=np.float32)
        if "speed" in params:
            wave = change_speed(wave, params["speed"], self.sample_rate)
        if "rir" in params:
            wave = reverberate(wave, self.rirs[params["rir"]])
        elif "rt60" in params:
            wave = reverberate(wave, room_impulse_response(params["rt60"], params["drr_db"], self.sample_rate, rng))
        if "noise" in params:
            if params["noise"] == "babble":
                if not self.babble:
                    raise ConfigError("augment.noise_types: 'babble' needs source utterances (Augmenter(babble=...))")
                noise = babble_noise(len(wave), self.babble, rng)
            elif params["noise"] == "file":
                noise = babble_noise(len(wave), self.noises, rng, talkers=(1, 1))
            else:
                noise = colored_noise(len(wave), params["noise"], rng)
            wave = add_noise(wave, noise, params["snr_db"])
        if "band" in params:
            wave = band_limit(wave, params["band"][0], params["band"][1], self.sample_rate)
        if "codec" in params:
            wave = codec_round_trip(wave, params["codec"], self.sample_rate, params["codec_quality"])
        if "gain_db" in params:
            wave = np.clip(wave * np.float32(10 ** (params["gain_db"] / 20)), -1.0, 1.0)
        return wave
