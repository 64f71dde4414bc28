"""The one manifest format: JSON Lines, one utterance a line (`id`, `audio`, `text`, `speaker`, `duration`, extras).

`audio` is a path relative to the manifest's folder (absolute paths are kept as they are).
Readers skip malformed lines with a count and a reason per line; `strict=True` turns the first skip into an error.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from malsori.errors import ManifestError
from malsori.files import follow_umask

REQUIRED = ("id", "audio", "text")


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
        """The audio file's absolute path."""
        p = Path(self.audio)
        return p if p.is_absolute() or self.root is None else self.root / p

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
            speaker=str(d.get("speaker", "")),
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


def _parse_line(raw: bytes, lineno: int, path: Path) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(d, dict):
        raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(d).__name__}")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ManifestError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
    if "duration" in d and d["duration"] is not None:
        try:
            float(d["duration"])
        except (TypeError, ValueError):
            raise ManifestError(f"{path}:{lineno}: field 'duration' is not a number: {d['duration']!r}") from None
    return d


def read_manifest(path: str | os.PathLike, strict: bool = False) -> Manifest:
    """Read a JSON Lines manifest; malformed lines are skipped and counted (or raise with `strict`)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = path.resolve().parent
    utts: list[Utterance] = []
    skipped: list[tuple[int, str]] = []
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = _parse_line(raw, lineno, path)
                if str(d["id"]) in seen:
                    raise ManifestError(f"{path}:{lineno}: duplicate id {d['id']!r}")
            except ManifestError as e:
                if strict:
                    raise
                skipped.append((lineno, str(e).split(": ", 1)[-1]))
                continue
            seen.add(str(d["id"]))
            utts.append(Utterance.from_json(d, root))
    return Manifest(path, utts, skipped)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see either the old or the whole new content, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> Path:
    """Write utterances as JSON Lines, atomically."""
    lines = [json.dumps(u.to_json(), ensure_ascii=False) for u in utterances]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return Path(path)
