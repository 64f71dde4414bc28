"""Train/dev/test split of parallel text by sentence group, written once to a small file every experiment reuses.

Tatoeba gives one sentence several translations, and one translation several sources. Pairs are joined into
groups: two pairs are in one group when they share a source or a target sentence (connected components), and a
whole group goes to one split. So a dev/test source never occurs in training (on either side, so the reverse
direction is clean too), and every translation of a test source is in test, as one of its references.
Sentences that other models trained on (`forced_train`: ASR transcripts, LM text) pull their group into training.

The split file (TSV, `#` comment lines first) lists the dev and test lines of the data file; every other line
is training. The header records the data file's sha256, so a split is never applied to another file.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from malsori.errors import MalsoriError
from malsori.files import sha256_of
from malsori.mt.data import Pair

SPLITS = ("train", "dev", "test")


def sentence_groups(pairs: list[Pair]) -> list[int]:
    """Group index of every pair: pairs sharing a source or a target sentence are in one group (union–find)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find(("s", p.source)), find(("t", p.target))
        if a != b:
            parent[b] = a
    roots: dict[tuple[str, str], int] = {}
    return [roots.setdefault(find(("s", p.source)), len(roots)) for p in pairs]


@dataclass
class Split:
    """Which split each line of a data file belongs to."""

    assignment: dict[int, str]  # line → "dev" | "test" (lines absent here are training)
    sha256: str  # of the data file it was made for

    def of(self, pair: Pair) -> str:
        return self.assignment.get(pair.line, "train")

    def select(self, pairs: list[Pair], split: str) -> list[Pair]:
        """The pairs of one split."""
        if split not in SPLITS:
            raise MalsoriError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        return [p for p in pairs if self.of(p) == split]


def make_split(pairs: list[Pair], forced_train: set[str], dev_sources: int, test_sources: int, seed: int = 0) -> Split:
    """Assign whole groups, shuffled by `seed`, to test until it holds `test_sources` distinct sources, then to dev;
    a group with any sentence in `forced_train` stays in training. Raises if too few groups are free."""
    groups = sentence_groups(pairs)
    members: dict[int, list[Pair]] = {}
    for g, p in zip(groups, pairs):
        members.setdefault(g, []).append(p)
    free = [g for g, ps in members.items() if not any(p.source in forced_train or p.target in forced_train for p in ps)]
    random.Random(seed).shuffle(free)
    assignment: dict[int, str] = {}
    want = {"test": test_sources, "dev": dev_sources}
    have = {"test": 0, "dev": 0}
    for g in free:
        split = next((s for s in ("test", "dev") if have[s] < want[s]), None)
        if split is None:
            break
        have[split] += len({p.source for p in members[g]})
        assignment.update((p.line, split) for p in members[g])
    if have["test"] < test_sources or have["dev"] < dev_sources:
        raise MalsoriError(f"only {len(free):,} sentence groups are free of forced training sentences: they give "
                           f"{have['test']} test and {have['dev']} dev sources, fewer than asked")
    return Split(assignment, "")


def overlap(pairs: list[Pair], split: Split) -> dict[str, int]:
    """The overlap check: sentences of dev and test also found in training (source side, target side, either side of
    the reverse direction); all zero for a split made by `make_split`."""
    train = split.select(pairs, "train")
    src, tgt = {p.source for p in train}, {p.target for p in train}
    out = {}
    for name in ("dev", "test"):
        held = split.select(pairs, name)
        out[f"{name}_sources_in_train"] = len({p.source for p in held} & src)
        out[f"{name}_targets_in_train"] = len({p.target for p in held} & tgt)
    return out


def write_split(path: str | os.PathLike, split: Split, data_file: str | os.PathLike, comment: str = "") -> Path:
    """The split file: `#` header (data file name, sha256, counts, `comment`), then `split<TAB>line` rows."""
    path = Path(path)
    counts = {s: sum(1 for v in split.assignment.values() if v == s) for s in ("dev", "test")}
    head = [f"# split of {Path(data_file).name} (sha256 {sha256_of(Path(data_file))}); lines not listed are train",
            f"# dev lines {counts['dev']}, test lines {counts['test']}"]
    head += [f"# {c}" for c in comment.splitlines()]
    rows = [f"{s}\t{line}" for line, s in sorted(split.assignment.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + rows) + "\n", encoding="utf-8")
    return path


def read_split(path: str | os.PathLike, data_file: str | os.PathLike | None = None) -> Split:
    """Read a split file; with `data_file`, refuse it when the file's sha256 is not the one the split was made for."""
    path = Path(path)
    if not path.is_file():
        raise MalsoriError(f"{path}: split file not found")
    assignment, sha = {}, ""
    for lineno, row in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if row.startswith("#"):
            if "(sha256 " in row and not sha:
                sha = row.split("(sha256 ", 1)[1].split(")", 1)[0]
            continue
        cols = row.split("\t")
        if len(cols) != 2 or cols[0] not in ("dev", "test") or not cols[1].isdigit():
            raise MalsoriError(f"{path}:{lineno}: expected dev|test<TAB>line number, got {row[:60]!r}")
        assignment[int(cols[1])] = cols[0]
    if data_file is not None and sha and sha256_of(Path(data_file)) != sha:
        raise MalsoriError(f"{path}: made for another version of {Path(data_file).name} (sha256 differs)")
    return Split(assignment, sha)


def text_digest(lines: list[str]) -> str:
    """A short digest of a list of sentences (to record which forced-training text a split honoured)."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]
