"""The one manifest format: JSON Lines, one utterance a line (`id`, `audio`, `text`, `speaker`, `duration`, extras).

`audio` is a path relative to the manifest's folder (absolute paths are kept as they are; paths outside the folder are
allowed, and named resolved in errors). Readers skip malformed lines with a count and a reason per line (bad JSON, a
field of the wrong type, NaN, a line or transcript past the caps); `strict=True` turns the first skip into an error.
Lines are read with a cap, so a huge line costs no more memory than the cap; JSON is written strictly (no NaN).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from malsori.errors import ManifestError
from malsori.files import create_temp_file, strict_json

REQUIRED = ("id", "audio", "text")
MAX_LINE_BYTES = 1 << 20  # longest manifest line read (1 MiB); longer lines are skipped without being held in memory
MAX_TEXT_CHARS = 100_000  # longest transcript (about 3 hours of speech)
_BOM = b"\xef\xbb\xbf"


@dataclass
class Utterance:
    """One line of a manifest."""

    id: str  # unique utterance id
    audio: str  # audio path as written in the manifest (relative to the manifest folder, or absolute)
    text: str  # transcript as given (normalize before scoring/training)
    speaker: str = ""  # speaker or voice id
    duration: float = 0.0  # seconds
    extra: dict = field(default_factory=dict)  # any other fields, kept on round trips
    root: Path | None = None  # folder the relative `audio` path is resolved against (not written)

    @property
    def audio_path(self) -> Path:
        """The audio file's path, its folder resolved (`../x.wav` is named as the file it is; the file name itself is
        kept, symlink or not)."""
        p = Path(self.audio)
        p = p if p.is_absolute() or self.root is None else self.root / p
        try:
            return p.parent.resolve() / p.name
        except (OSError, RuntimeError):  # a symlink loop among the folders: the open names it
            return p

    def to_json(self) -> dict:
        d = {"id": self.id, "audio": self.audio, "text": self.text, "speaker": self.speaker, "duration": self.duration}
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict, root: Path | None = None) -> "Utterance":
        known = {"id", "audio", "text", "speaker", "duration"}
        return cls(
            id=str(d["id"]),
            audio=str(d["audio"]),
            text=str(d["text"]),
            speaker=str(d.get("speaker") or ""),
            duration=float(d.get("duration", 0.0) or 0.0),
            extra={k: v for k, v in d.items() if k not in known},
            root=root,
        )


@dataclass
class Manifest:
    """Utterances read from one file, and the lines that were skipped."""

    path: Path  # the manifest file
    utterances: list[Utterance]  # the good lines, in file order
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, reason)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    def summary(self) -> str:
        s = f"{self.path}: {len(self.utterances)} utterances"
        if self.skipped:
            s += f", {len(self.skipped)} malformed lines skipped (first: line {self.skipped[0][0]}: {self.skipped[0][1]})"
        return s


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def _number(d: dict, key: str) -> None:
    """`key`, when present and not null, must be a finite number >= 0 (or a string holding one)."""
    v = d.get(key)
    if v is None:
        return
    try:
        x = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except ValueError:
        x = None
    if x is None or not math.isfinite(x) or x < 0:
        raise ManifestError(f"field '{key}' is not a finite number >= 0: {str(v)[:40]!r}")


def _parse_line(raw: bytes) -> dict:
    """One manifest line → its object; ManifestError (without the file:line, which the reader adds) if it is bad."""
    if len(raw) > MAX_LINE_BYTES:
        raise ManifestError(f"line longer than {MAX_LINE_BYTES} bytes (limit malsori.data.manifest.MAX_LINE_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        d = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ManifestError(f"malformed JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"malformed JSON ({str(e)[:80]})") from None
    if not isinstance(d, dict):
        raise ManifestError(f"expected a JSON object, got {type(d).__name__}")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ManifestError(f"missing field(s) {', '.join(missing)}")
    for key, types in (("id", (str, int)), ("audio", (str,)), ("text", (str,)), ("speaker", (str, int, type(None)))):
        if key in d and (not isinstance(d[key], types) or isinstance(d[key], bool)):
            raise ManifestError(f"field '{key}' must be a {' or '.join(t.__name__ for t in types if t is not type(None))}, "
                                f"got {json.dumps(d[key])[:40]}")
    if not str(d["id"]).strip() or not d["audio"].strip():
        raise ManifestError(f"field '{'audio' if str(d['id']).strip() else 'id'}' is empty")
    if len(d["text"]) > MAX_TEXT_CHARS:
        raise ManifestError(f"transcript of {len(d['text'])} characters is longer than {MAX_TEXT_CHARS} "
                            f"(limit malsori.data.manifest.MAX_TEXT_CHARS)")
    _number(d, "duration")
    _number(d, "offset")
    return d


def _capped_lines(f) -> Iterable[bytes]:
    """The lines of a binary file, each cut to at most MAX_LINE_BYTES + 1 bytes (the rest of a longer line is read
    and dropped in pieces of that size), so memory stays bounded by the cap."""
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield line


def read_manifest(path: str | os.PathLike, strict: bool = False) -> Manifest:
    """Read a JSON Lines manifest; malformed lines are skipped and counted (or raise with `strict`)."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory, not a manifest file")
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if not (path.is_file() or path.is_fifo()):  # a FIFO is fine (`<(zcat m.jsonl.gz)`); a device is not
        raise ManifestError(f"{path}: not a regular file; a manifest is a JSON Lines file")
    root = path.resolve().parent
    utts: list[Utterance] = []
    skipped: list[tuple[int, str]] = []
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(_capped_lines(f), 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            try:
                d = _parse_line(raw)
                if str(d["id"]) in seen:
                    raise ManifestError(f"duplicate id {d['id']!r}")
            except ManifestError as e:
                if strict:
                    raise ManifestError(f"{path}:{lineno}: {e}") from None
                skipped.append((lineno, str(e)))
                continue
            seen.add(str(d["id"]))
            utts.append(Utterance.from_json(d, root))
    return Manifest(path, utts, skipped)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see either the old or the whole new content, never a half; the file gets the
    user's umask like any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj, **kwargs) -> None:
    """Write strict JSON (no NaN/Infinity: a MalsoriError naming the file) atomically; kwargs go to json.dumps."""
    atomic_write_text(path, strict_json(obj, str(path), **kwargs) + "\n")


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> Path:
    """Write utterances as JSON Lines (strict JSON: a NaN is an error naming the utterance), atomically."""
    lines = [strict_json(u.to_json(), f"{path}: utterance {u.id}") for u in utterances]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return Path(path)
