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
from typing import TextIO

import numpy as np

from malsori.errors import MalsoriError
from malsori.lm.ngram import BOS, EOS, NO_PROB, UNK, WORD_BITS, NgramLM, NgramTable, ngram_ids, rows_of

CHUNK = 65536  # n-grams formatted at once when writing
_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"\\(\d+)-grams:$")


class ArpaError(MalsoriError):
    """An ARPA file is missing or malformed (the message names the line)."""


def _open(path: Path, mode: str) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8", compresslevel=6) if "w" in mode else gzip.open(
            path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_arpa(lm: NgramLM, path: str | os.PathLike, digits: int | None = None) -> None:
    """Write `lm` as ARPA (see NgramLM.write_arpa); backoff weights only where they are not 0."""
    path = Path(path)
    fmt = float.__repr__ if digits is None else (lambda x: f"{x:.{digits}g}")
    vocab = np.asarray(lm.vocab, dtype=object)
    with _open(path, "w") as f:
        f.write("\\data\\\n")
        for k, t in enumerate(lm.tables, 1):
            f.write(f"ngram {k}={len(t)}\n")
        for k, t in enumerate(lm.tables):
            f.write(f"\n\\{k + 1}-grams:\n")
            top = k == lm.order - 1
            for lo in range(0, len(t), CHUNK):
                rows = np.arange(lo, min(lo + CHUNK, len(t)))
                words = vocab[ngram_ids(lm.tables, k, rows)]
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
    """Numbered, stripped lines of a text file, with errors that name the file and line."""

    def __init__(self, path: Path, f: TextIO):
        self.path, self.f, self.lineno = path, f, 0

    def next(self) -> str | None:
        try:
            line = self.f.readline()
        except UnicodeDecodeError as e:
            raise self.error(f"not UTF-8 ({e.reason})", self.lineno + 1) from None
        except (OSError, EOFError) as e:
            raise ArpaError(f"{self.path}: cannot read after line {self.lineno} ({e})") from None
        if not line:
            return None
        self.lineno += 1
        return line.strip()

    def error(self, message: str, lineno: int | None = None) -> ArpaError:
        return ArpaError(f"{self.path}:{self.lineno if lineno is None else lineno}: {message}")


def _parse_float(lines: _Lines, text: str, what: str, at_most: float | None = None) -> float:
    try:
        x = float(text)
    except ValueError:
        raise lines.error(f"{what} {text!r} is not a number") from None
    if math.isnan(x) or (at_most is not None and x > at_most):
        raise lines.error(f"{what} {text} is not a number ≤ {at_most}" if at_most is not None else f"{what} is NaN")
    return x


def read_arpa(path: str | os.PathLike) -> tuple[list[str], list[NgramTable]]:
    """(vocabulary, tables) of an ARPA file, plain or .gz."""
    path = Path(path)
    if not path.is_file():
        raise ArpaError(f"{path}: ARPA file not found")
    with _open(path, "r") as f:
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
        parsed = []  # per order: (ids [n, k], log10 probs, log10 bows, line numbers)
        for k, size in enumerate(sizes, 1):
            while line == "":
                line = lines.next()
            if line is None or _SECTION.match(line) is None or int(_SECTION.match(line).group(1)) != k:
                raise lines.error(f"expected \\{k}-grams:, got {'end of file' if line is None else repr(line[:60])}")
            ids, probs, bows, linenos = array("q"), array("d"), array("d"), array("q")
            while (line := lines.next()) is not None and line and not line.startswith("\\"):
                parts = line.split()
                if len(parts) not in (k + 1, k + 2):
                    raise lines.error(f"a {k}-gram line needs a log10 probability, {k} word(s) and an optional "
                                      f"backoff weight; got {len(parts)} fields")
                probs.append(_parse_float(lines, parts[0], "log10 probability", 0.0))
                bows.append(_parse_float(lines, parts[k + 1], "backoff weight") if len(parts) == k + 2 else 0.0)
                linenos.append(lines.lineno)
                if k == 1:
                    if parts[1] in word_id:
                        raise lines.error(f"the 1-gram {parts[1]!r} is listed twice")
                    word_id[parts[1]] = len(word_id)
                    ids.append(word_id[parts[1]])
                else:
                    for w in parts[1:k + 1]:
                        i = word_id.get(w)
                        if i is None:
                            raise lines.error(f"word {w!r} is not among the 1-grams")
                        ids.append(i)
            if len(probs) != size:
                raise lines.error(f"\\data\\ says {size} {k}-grams, the section has {len(probs)}")
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


def _build(path: Path, word_id: dict[str, int], parsed: list) -> tuple[list[str], list[NgramTable]]:
    """Tables from parsed sections: specials checked, prefixes and suffixes completed, keys sorted."""
    if EOS not in word_id:
        raise ArpaError(f"{path}: no </s> among the 1-grams: the model could never end a sentence")
    ids1, p1, b1, l1 = parsed[0]
    extra = [w for w in (UNK, BOS) if w not in word_id]
    for w in extra:
        word_id[w] = len(word_id)
    vocab = list(word_id)
    p1 = np.concatenate([p1, np.full(len(extra), NO_PROB)])
    b1 = np.concatenate([b1, np.zeros(len(extra))])
    parsed = [list(x) for x in parsed]
    for k in range(len(parsed) - 1, 0, -1):  # (k+1)-grams need their k-word prefix and suffix listed
        ids = parsed[k][0]
        if k >= 2:
            need = _missing(parsed[k - 1][0], np.concatenate([ids[:, :-1], ids[:, 1:]]))
            if len(need):
                lower = parsed[k - 1]
                parsed[k - 1] = [np.concatenate([lower[0], need]), np.concatenate([lower[1], np.full(len(need), np.nan)]),
                                 np.concatenate([lower[2], np.zeros(len(need))]),
                                 np.concatenate([lower[3], np.zeros(len(need), dtype=np.int64)])]
    tables = [NgramTable(np.arange(len(vocab), dtype=np.int64), p1.copy(), b1.copy())]
    for k in range(1, len(parsed)):
        ids, probs, bows, linenos = parsed[k]
        prefix = rows_of(tables, ids[:, :-1])
        assert (prefix >= 0).all(), "prefixes were completed above"
        keys = (prefix << WORD_BITS) | ids[:, -1]
        order = np.argsort(keys, kind="stable")
        keys, probs, bows, linenos, ids = keys[order], probs[order], bows[order], linenos[order], ids[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if len(dup):
            i = dup[0] + 1
            lineno = max(linenos[i], linenos[i - 1])
            raise ArpaError(f"{path}:{lineno}: the {k + 1}-gram {' '.join(vocab[j] for j in ids[i])!r} is listed twice")
        added = np.isnan(probs)
        tables.append(NgramTable(keys[~added], probs[~added], bows[~added]))
        if added.any():  # the probability the back-off rule gives, computed before the n-gram is listed
            partial = NgramLM(vocab, tables)
            probs = probs.copy()
            probs[added] = [partial.log10prob_ids(int(r[-1]), [int(x) for x in r[:-1]]) for r in ids[added]]
            tables[-1] = NgramTable(keys, probs, bows.copy())
    tables[-1].log10_bow = np.zeros(len(tables[-1]))  # the top order is never a history
    return vocab, tables
