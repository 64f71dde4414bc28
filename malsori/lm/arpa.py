"""ARPA back-off LM files, read and written: the format SRILM, KenLM, IRSTLM and pyctcdecode exchange.

    \\data\\
    ngram 1=5
    ngram 2=7
    \\1-grams:
    -0.8129  the  -0.3010          log10 P(w | h), the words, then log10 bow(h w) when h w is a history
    ...
    \\end\\

Reading accepts files from other toolkits: a listed n-gram whose prefix or suffix is not listed gets that
(k−1)-gram added with the probability the back-off rule already gives it and no backoff weight, which changes
no probability and keeps malsori's invariant (prefixes and suffixes listed). A missing <unk> or <s> is added
with log10 probability −99; a missing </s> is an error. Errors name the file and line.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from array import array
from pathlib import Path
from typing import BinaryIO

import numpy as np

from malsori.errors import MalsoriError
from malsori.lm.ngram_tables import (
    BOS, EOS, NO_PROB, UNK, WORD_BITS, WORD_MASK, NgramTable, backoff_log10prob, find_rows, ngram_ids, rows_of,
)

CHUNK = 65536  # n-grams formatted at once when writing
_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"\\(\d+)-grams:$")


class ArpaError(MalsoriError):
    """An ARPA file is missing or malformed (the message names the line)."""


def write_arpa(vocab: list[str], tables: list[NgramTable], path: str | os.PathLike, digits: int | None = None) -> None:
    """Write a model's `vocab` and `tables` as ARPA (see NgramLM.write_arpa); backoff weights only where they are
    not 0."""
    path = Path(path)
    fmt = float.__repr__ if digits is None else (lambda x: f"{x:.{digits}g}")
    words_of = np.asarray(vocab, dtype=object)
    opened = gzip.open(path, "wt", encoding="utf-8", compresslevel=6) if path.name.endswith(".gz") else open(
        path, "w", encoding="utf-8")
    with opened as f:
        f.write("\\data\\\n")
        for k, t in enumerate(tables, 1):
            f.write(f"ngram {k}={len(t)}\n")
        for k, t in enumerate(tables):
            f.write(f"\n\\{k + 1}-grams:\n")
            top = k == len(tables) - 1
            for lo in range(0, len(t), CHUNK):
                rows = np.arange(lo, min(lo + CHUNK, len(t)))
                words = words_of[ngram_ids(tables, k, rows)]
                probs = t.log10_prob[rows].tolist()
                bows = t.log10_bow[rows].tolist()
                lines = []
                for p, ws, b in zip(probs, words.tolist(), bows):
                    if top or b == 0.0:
                        lines.append(f"{fmt(p)}\t{' '.join(ws)}\n")
                    else:
                        lines.append(f"{fmt(p)}\t{' '.join(ws)}\t{fmt(b)}\n")
                f.write("".join(lines))
        f.write("\n\\end\\\n")


class _Lines:
    """Numbered, stripped lines of a (binary) file, decoded one by one so errors name the exact line."""

    def __init__(self, path: Path, f: BinaryIO):
        self.path, self.lineno = path, 0
        self._it = iter(f)

    def next(self) -> str | None:
        """The next stripped line, or None at the end of the file."""
        try:
            raw = next(self._it)
        except StopIteration:
            return None
        except (OSError, EOFError) as e:
            raise ArpaError(f"{self.path}: cannot read after line {self.lineno} ({e})") from None
        self.lineno += 1
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise self.error(f"not UTF-8 (byte {e.start} of the line)") from None

    def error(self, message: str) -> ArpaError:
        return ArpaError(f"{self.path}:{self.lineno}: {message}")


def _bad_entry(parts: list[str], k: int, word_id: dict[str, int], top: bool) -> str:
    """What is wrong with an n-gram line that failed the fast parse."""
    if len(parts) not in (k + 1, k + 2):
        return (f"a {k}-gram line needs a log10 probability, {k} word(s)"
                f"{'' if top else ' and an optional backoff weight'}; got {len(parts)} fields")
    numbers = [("log10 probability", parts[0])] + ([("backoff weight", parts[-1])] if len(parts) == k + 2 else [])
    for what, text in numbers:
        try:
            x = float(text)
        except ValueError:
            return f"{what} {text!r} is not a number"
        if math.isnan(x) or (what == "log10 probability" and x > 0):
            return f"{what} {text} is not a log10 probability (a number ≤ 0)" if x > 0 else f"{what} is NaN"
    missing = [w for w in parts[1:k + 1] if w not in word_id]
    return f"word {missing[0]!r} is not among the 1-grams" if missing else f"the 1-gram {parts[1]!r} is listed twice"


def read_arpa(path: str | os.PathLike) -> tuple[list[str], list[NgramTable]]:
    """(vocabulary, tables) of an ARPA file, plain or .gz."""
    path = Path(path)
    if not path.is_file():
        raise ArpaError(f"{path}: ARPA file not found")
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        lines = _Lines(path, f)
        line = lines.next()
        while line is not None and line != "\\data\\":
            line = lines.next()
        if line is None:
            raise lines.error("no \\data\\ line: not an ARPA file")
        sizes: list[int] = []
        while (line := lines.next()) is not None and not line.startswith("\\"):
            if not line:
                continue
            m = _HEADER.match(line)
            if not m or int(m.group(1)) != len(sizes) + 1:
                raise lines.error(f"expected 'ngram {len(sizes) + 1}=COUNT', got {line[:60]!r}")
            sizes.append(int(m.group(2)))
        if not sizes:
            raise lines.error("the \\data\\ section lists no n-gram counts")
        word_id: dict[str, int] = {}
        lookup = word_id.__getitem__
        parsed = []  # per order: (ids [n, k], log10 probs, log10 bows, line numbers)
        for k, size in enumerate(sizes, 1):
            while line == "":
                line = lines.next()
            m = _SECTION.match(line) if line is not None else None
            if m is None or int(m.group(1)) != k:
                raise lines.error(f"expected \\{k}-grams:, got {'end of file' if line is None else repr(line[:60])}")
            top = k == len(sizes)
            section_line = lines.lineno
            ids, probs, bows, linenos = array("q"), array("d"), array("d"), array("q")
            while (line := lines.next()) is not None and line and line[0] != "\\":
                parts = line.split()
                try:
                    n = len(parts)
                    p = float(parts[0])
                    b = float(parts[-1]) if n == k + 2 else 0.0
                    if (n != k + 1 and n != k + 2) or not p <= 0 or b != b:
                        raise ValueError
                    if k == 1:
                        if parts[1] in word_id:
                            raise ValueError
                        word_id[parts[1]] = len(word_id)
                    ids.extend(map(lookup, parts[1:k + 1]))
                except (ValueError, KeyError, IndexError):
                    raise lines.error(_bad_entry(parts, k, word_id, top)) from None
                probs.append(p)
                bows.append(b)
                linenos.append(lines.lineno)
            if len(probs) != size:
                raise ArpaError(f"{path}:{section_line}: \\data\\ says {size} {k}-grams, the section has {len(probs)}")
            parsed.append((np.frombuffer(ids, dtype=np.int64).reshape(-1, k), np.frombuffer(probs),
                           np.frombuffer(bows), np.frombuffer(linenos, dtype=np.int64)))
        while line == "":
            line = lines.next()
        if line != "\\end\\":
            raise lines.error(f"expected \\end\\ after the {len(sizes)}-grams, got "
                              f"{'end of file' if line is None else repr(line[:60])}")
    return _build(path, word_id, parsed)


def _missing(have: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Rows of `need` (unique) that are not rows of `have` (both [n, k] id matrices)."""
    need = np.unique(need, axis=0)
    if len(have) == 0 or len(need) == 0:
        return need
    _, inverse, counts = np.unique(np.concatenate([have, need]), axis=0, return_inverse=True, return_counts=True)
    return need[counts[inverse.reshape(-1)[len(have):]] == 1]


def _complete(parsed: list[list[np.ndarray]]) -> None:
    """Add (probability NaN, to be computed) every prefix and suffix of a listed n-gram that is not listed."""
    for k in range(len(parsed) - 1, 1, -1):
        ids = parsed[k][0]
        need = _missing(parsed[k - 1][0], np.concatenate([ids[:, :-1], ids[:, 1:]]))
        if len(need):
            ids, probs, bows, linenos = parsed[k - 1]
            parsed[k - 1] = [np.concatenate([ids, need]), np.concatenate([probs, np.full(len(need), np.nan)]),
                             np.concatenate([bows, np.zeros(len(need))]),
                             np.concatenate([linenos, np.zeros(len(need), dtype=np.int64)])]


def _assemble(path: Path, vocab: list[str], parsed: list[list[np.ndarray]]) -> list[NgramTable] | None:
    """Sorted tables, or None when some prefix or suffix of a listed n-gram is not listed."""
    _, p1, b1, _ = parsed[0]
    tables = [NgramTable(np.arange(len(vocab), dtype=np.int64), p1.copy(), b1.copy())]
    suffix = None  # suffix rows of the table below (None: unigrams, whose suffix is empty)
    for k in range(1, len(parsed)):
        ids, probs, bows, linenos = parsed[k]
        prefix = rows_of(tables, ids[:, :-1])
        if np.any(prefix < 0):
            return None
        keys = (prefix << WORD_BITS) | ids[:, -1]
        if not np.all(keys[1:] > keys[:-1]):  # not in malsori's order (or a duplicate): sort
            order = np.argsort(keys)
            keys, probs, bows, linenos, ids = keys[order], probs[order], bows[order], linenos[order], ids[order]
            dup = np.flatnonzero(keys[1:] == keys[:-1])
            if len(dup):
                i = dup[0] + 1
                raise ArpaError(f"{path}:{max(linenos[i], linenos[i - 1])}: the {k + 1}-gram "
                                f"{' '.join(vocab[j] for j in ids[i])!r} is listed twice")
        last = keys & WORD_MASK
        suffix = last if suffix is None else find_rows(tables[k - 1], suffix[keys >> WORD_BITS], last)
        if np.any(suffix < 0):
            return None
        added = np.isnan(probs)
        if added.any():  # the probability the back-off rule gives, computed before the n-gram is listed
            partial = tables + [NgramTable(keys[~added], probs[~added], bows[~added])]
            probs = probs.copy()
            probs[added] = [backoff_log10prob(partial, int(r[-1]), [int(x) for x in r[:-1]]) for r in ids[added]]
        tables.append(NgramTable(keys, probs.copy(), bows.copy()))
    tables[-1].log10_bow = np.zeros(len(tables[-1]))  # the top order is never a history
    return tables


def _build(path: Path, word_id: dict[str, int], parsed: list) -> tuple[list[str], list[NgramTable]]:
    """Tables from parsed sections: specials checked, prefixes and suffixes completed when missing."""
    if EOS not in word_id:
        raise ArpaError(f"{path}: no </s> among the 1-grams: the model could never end a sentence")
    extra = [w for w in (UNK, BOS) if w not in word_id]
    for w in extra:
        word_id[w] = len(word_id)
    vocab = list(word_id)
    parsed = [list(x) for x in parsed]
    _, p1, b1, l1 = parsed[0]
    parsed[0] = [None, np.concatenate([p1, np.full(len(extra), NO_PROB)]),
                 np.concatenate([b1, np.zeros(len(extra))]), l1]
    tables = _assemble(path, vocab, parsed)
    if tables is None:  # another toolkit left out some prefixes or suffixes: list them, changing no probability
        _complete(parsed)
        tables = _assemble(path, vocab, parsed)
    return vocab, tables
