"""Parallel text: (source, target) pairs from TSV or JSON Lines files, plain or gzip, each pair keeping its line.

TSV: `source<TAB>target[<TAB>anything]` (Tatoeba/manythings files carry an attribution column, ignored). JSON Lines
(`.jsonl`, `.jsonl.gz`): `{"source": ..., "target": ..., "id": ...}`, id optional. A malformed line (not UTF-8, too
few columns, bad JSON, an empty or non-string side) stops a strict read with `file:line: reason`; a bulk read
(strict=False) skips it and counts it.
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from malsori.errors import MalsoriError


class ParallelFileError(MalsoriError):
    """A parallel text file is missing, unreadable or has a malformed line."""


@dataclass(frozen=True)
class Pair:
    """One translation pair and where it came from."""

    source: str  # source sentence (NFC, whitespace collapsed)
    target: str  # its translation
    line: int  # 1-based line number in the file
    id: str = ""  # the file's id for the pair (JSON Lines), else empty


@dataclass
class ParallelReadStats:
    """What a bulk read skipped."""

    skipped: list[str] = field(default_factory=list)  # "file:line: reason" of each malformed line


def clean(text: str) -> str:
    """NFC and single spaces: the one form in which sentences are compared, split and tokenized."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _is_jsonl(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith((".jsonl", ".json"))


def _parse(line: str, jsonl: bool, lineno: int) -> Pair:
    """A decoded line → Pair, or ValueError saying what is wrong."""
    if jsonl:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {type(obj).__name__}")
        source, target, pid = obj.get("source"), obj.get("target"), obj.get("id", "")
        for name, value in (("source", source), ("target", target), ("id", pid)):
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    else:
        cols = line.split("\t")
        if len(cols) < 2:
            raise ValueError("expected source<TAB>target, found no tab")
        source, target, pid = cols[0], cols[1], ""
    source, target = clean(source), clean(target)
    if not source or not target:
        raise ValueError(f"empty {'source' if not source else 'target'}")
    return Pair(source, target, lineno, pid)


def read_parallel(path: str | os.PathLike, strict: bool = True, stats: ParallelReadStats | None = None,
                  reverse: bool = False) -> list[Pair]:
    """The pairs of a TSV or JSON Lines file (`.gz` decompressed); blank lines are passed over. `reverse` swaps
    source and target (fra→eng from an eng–fra file)."""
    path = Path(path)
    if not path.is_file():
        raise ParallelFileError(f"{path}: parallel text file not found")
    stats = stats if stats is not None else ParallelReadStats()
    jsonl, pairs, lineno = _is_jsonl(path), [], 0
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n").lstrip("\ufeff")
                    if not line.strip():
                        continue
                    pair = _parse(line, jsonl, lineno)
                except (UnicodeDecodeError, ValueError) as e:
                    reason = f"{path}:{lineno}: {'not UTF-8' if isinstance(e, UnicodeDecodeError) else e}"
                    if strict:
                        raise ParallelFileError(reason) from None
                    stats.skipped.append(reason)
                    continue
                pairs.append(Pair(pair.target, pair.source, lineno, pair.id) if reverse else pair)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ParallelFileError(f"{path}: cannot read after line {lineno} ({e})") from None
    return pairs


@dataclass
class Multi:
    """A source sentence with every translation the data gives it: the references of multi-reference scoring."""

    source: str  # the sentence to translate
    references: list[str]  # all its translations, in file order
    lines: list[int]  # the file lines they came from


def group_references(pairs: list[Pair]) -> list[Multi]:
    """Pairs → one `Multi` per distinct source, in order of first appearance."""
    groups: dict[str, Multi] = {}
    for p in pairs:
        g = groups.setdefault(p.source, Multi(p.source, [], []))
        if p.target not in g.references:
            g.references.append(p.target)
        g.lines.append(p.line)
    return list(groups.values())
