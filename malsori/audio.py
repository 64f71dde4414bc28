"""Audio I/O: load any soundfile-readable file as mono float32 at a target rate (soxr resampling); save FLAC atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from malsori.errors import AudioError
from malsori.files import follow_umask

SAMPLE_RATE = 16000  # the toolkit's working sample rate


def resample(wave: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform with soxr (high quality); a no-op when the rates match."""
    if orig_sr == sample_rate:
        return wave
    return soxr.resample(wave, orig_sr, sample_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read wav/flac/ogg/mp3 as mono float32 in [-1, 1] at `sample_rate`; one-line AudioError naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: audio file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({str(e).splitlines()[0]})") from None
    if wave.shape[0] == 0:
        raise AudioError(f"{path}: audio has zero samples")
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return resample(np.ascontiguousarray(wave, dtype=np.float32), sr, sample_rate)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: cannot read audio header ({str(e).splitlines()[0]})") from None
    return info.frames / info.samplerate


def save_audio(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (FLAC by extension, or WAV) via a temp file + rename, so no half-written file is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format (use .flac, .wav or .ogg)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        data = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
        sf.write(tmp, data, sample_rate, format=fmt, subtype="PCM_16" if fmt != "OGG" else "VORBIS")
        follow_umask(tmp)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
