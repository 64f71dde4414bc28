"""Reading LM training text: plain or gzip files, one sentence or paragraph a line, streamed line by line.

Lines that are not UTF-8 stop the read with the file and line number, or are skipped and counted, so a
stray Latin-1 byte in a 30 MB corpus is reported where it is instead of failing somewhere inside training.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from malsori.errors import MalsoriError


class TextFileError(MalsoriError):
    """A text file is missing, unreadable or has a line that is not UTF-8."""


@dataclass
class TextReadStats:
    """What a read saw, filled in as the lines stream past."""

    lines: int = 0  # non-empty lines yielded
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" of each line skipped (not UTF-8)


def iter_text_lines(
    paths: Iterable[str | os.PathLike], strict: bool = True, stats: TextReadStats | None = None
) -> Iterator[str]:
    """Yield the non-empty lines (stripped, BOM removed) of UTF-8 text files, `.gz` ones decompressed.

    A line that is not UTF-8 raises TextFileError naming file and line with `strict`, else it is skipped and
    recorded in `stats.skipped`. Files are checked for existence before any line is read.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise TextFileError(f"{path}: text file not found")
    stats = stats if stats is not None else TextReadStats()
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        lineno = 0
        try:
            with opener(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        reason = f"{path}:{lineno}: not UTF-8 (byte {e.start} of the line)"
                        if strict:
                            raise TextFileError(reason) from None
                        stats.skipped.append(reason)
                        continue
                    line = line.lstrip("\ufeff").strip() if lineno == 1 else line.strip()
                    if line:
                        stats.lines += 1
                        yield line
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise TextFileError(f"{path}: cannot read text file after line {lineno} ({e})") from None


def excluded_sentences(paths: Iterable[str | os.PathLike], strict: bool = True) -> set[str]:
    """The normalized sentences of text files (one a line) and `.jsonl` manifests (their transcripts): lines of LM
    training text that normalize to one of them are left out (test transcripts must not leak into an LM)."""
    from malsori.data.manifest import read_manifest
    from malsori.text import normalize

    out: set[str] = set()
    for path in map(Path, paths):
        if path.name.endswith(".jsonl"):
            out.update(normalize(u.text) for u in read_manifest(path, strict=True).utterances)
        else:
            out.update(normalize(line) for line in iter_text_lines([path], strict))
    out.discard("")
    return out
