"""Audio I/O: read any soundfile-readable file as mono float32 at a target rate, block by block (memory bounded by the
block, not the file: soxr's streaming resampler gives the same samples as resampling the whole file); save atomically.

Only regular, complete audio files are read: devices, FIFOs, symlink loops, empty or truncated files and data that no
decoder recognizes are refused with one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr

from malsori.errors import AudioError
from malsori.files import create_temp_file

SAMPLE_RATE = 16000  # the toolkit's working sample rate
BLOCK_SECONDS = 10.0  # audio read (and resampled) at a time: peak memory of reading does not grow with the file
_UNKNOWN_LENGTH = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # WAV data sizes that streaming writers put in the header


def resample(wave: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """Resample a mono float32 waveform with soxr (high quality); a no-op when the rates match."""
    if orig_sr == sample_rate:
        return wave
    return soxr.resample(wave, orig_sr, sample_rate, quality="HQ").astype(np.float32, copy=False)


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a non-empty regular file (missing, dangling or looping symlinks, folders, devices, FIFOs)."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioError(f"{path}: symlink loop, not an audio file") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            dangling = f" (dangling symlink to {os.readlink(path)})" if path.is_symlink() else ""
            raise AudioError(f"{path}: audio file not found{dangling}") from None
        raise AudioError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a character device" if stat.S_ISCHR(st.st_mode)
                else "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "special")
        raise AudioError(f"{path}: not a regular file ({kind}); malsori reads audio files only")
    if st.st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence what C decoders print on file descriptor 2 while a file is probed (mpg123 warns about random bytes)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _libsndfile_reason(e: Exception) -> str:
    msg = str(e).splitlines()[0]
    msg = re.sub(r"^Error opening .*?: ", "", msg)
    if "not a regular file" in msg or "unknown format" in msg.lower():
        return "not a recognized audio format, or a corrupt header"
    return msg


def open_audio(path: str | os.PathLike) -> sf.SoundFile:
    """Open a complete, regular audio file for reading; AudioError naming the file if it is not one."""
    path = Path(path)
    _check_regular_file(path)
    try:
        with _quiet_stderr():
            f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({_libsndfile_reason(e)})") from None
    # libsndfile shortens a WAV whose data chunk runs past the end of the file without a word; its log says so
    m = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", f.extra_info, re.M)
    if m and int(m[1]) not in _UNKNOWN_LENGTH and int(m[1]) > int(m[2]):
        f.close()
        have = f.frames / f.samplerate
        raise AudioError(f"{path}: truncated {f.format} file: its header announces {have * int(m[1]) / max(1, int(m[2])):.2f} s "
                         f"of audio, the file holds {have:.2f} s")
    return f


def iter_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, offset: float = 0.0, duration: float | None = None,
               block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Mono float32 blocks of `path` in [-1, 1] at `sample_rate`, from `offset` seconds for `duration` seconds (None:
    to the end); joined, the blocks equal the whole file resampled at once. AudioError naming the file if it cannot
    be read, is cut short (fewer samples than its header says), holds no samples, or holds NaN/Inf samples."""
    with open_audio(path) as f:
        yield from resample_blocks(_file_blocks(f, Path(path), offset, duration, block_seconds), f.samplerate,
                                   sample_rate, Path(path))


def _file_blocks(f: sf.SoundFile, path: Path, offset: float, duration: float | None, block_seconds: float) -> Iterator[np.ndarray]:
    """Mono blocks at the file's own rate, from `offset` for `duration` seconds."""
    sr = f.samplerate
    start = int(round(offset * sr))
    if start >= f.frames > 0 or start < 0:
        raise AudioError(f"{path}: offset {offset} s is outside the recording ({f.frames / sr:.2f} s)")
    if start:
        f.seek(start)
    left = f.frames - start if duration is None else min(int(round(duration * sr)), f.frames - start)
    if duration is not None and left <= 0:
        raise AudioError(f"{path}: empty segment ({duration} s from {offset} s)")
    block = max(1, int(block_seconds * sr))
    while left > 0:
        try:
            x = f.read(min(block, left), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{path}: cannot decode audio after {f.tell() / sr:.2f} s ({_libsndfile_reason(e)})") from None
        if len(x) == 0:
            break
        left -= len(x)
        yield np.ascontiguousarray(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0], dtype=np.float32)
    slack = int(0.01 * f.frames) + 2304 if f.format == "MPEG" else 0  # an MP3's frame count is an estimate
    if left > slack:
        read = (f.frames - start if duration is None else int(round(duration * sr))) - left
        raise AudioError(f"{path}: truncated or corrupt: the header announces {f.frames / sr:.2f} s, only "
                         f"{(start + read) / sr:.2f} s could be read")


def resample_blocks(blocks: Iterable[np.ndarray], orig_sr: int, sample_rate: int = SAMPLE_RATE,
                    name: str | os.PathLike = "audio") -> Iterator[np.ndarray]:
    """Mono float32 blocks at `orig_sr` → blocks at `sample_rate` through one streaming resampler (the same samples
    as `resample` on the whole signal); non-finite samples or no samples at all are an AudioError naming `name`."""
    stream = None if orig_sr == sample_rate else soxr.ResampleStream(orig_sr, sample_rate, 1, dtype="float32", quality="HQ")
    total = 0
    for x in blocks:
        if not np.isfinite(x).all():
            raise AudioError(f"{name}: audio contains NaN or infinite samples (after {total / orig_sr:.2f} s)")
        total += len(x)
        out = x if stream is None else stream.resample_chunk(x)
        if len(out):
            yield out
    if total == 0:
        raise AudioError(f"{name}: audio has zero samples")
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail


def fixed_blocks(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of blocks into blocks of exactly `size` samples (the last one may be shorter)."""
    buf = np.zeros(0, np.float32)
    for x in blocks:
        buf = np.concatenate([buf, x])
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if len(buf):
        yield buf


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, offset: float = 0.0,
               duration: float | None = None) -> np.ndarray:
    """Read wav/flac/ogg/mp3 whole as mono float32 in [-1, 1] at `sample_rate` (see iter_audio; long recordings are
    better read in blocks with iter_audio)."""
    return np.concatenate(list(iter_audio(path, sample_rate, offset, duration)))


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the file header (no decoding); truncated or unreadable files are an AudioError."""
    with open_audio(path) as f:
        return f.frames / f.samplerate


def save_audio(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (FLAC by extension, or WAV) via a temp file + rename, so no half-written file is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format (use .flac, .wav or .ogg)")
    fd, tmp = create_temp_file(path.parent, f".{path.stem}.", path.suffix)
    os.close(fd)
    try:
        data = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
        sf.write(tmp, data, sample_rate, format=fmt, subtype="PCM_16" if fmt != "OGG" else "VORBIS")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
