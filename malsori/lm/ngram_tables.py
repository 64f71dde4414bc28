"""The storage of a backoff word n-gram LM and the lookups on it: one sorted table per order, the special words,
and the ARPA backoff rule over the tables. Below the model (ngram.py) and the modules that train, read, write and
prune its tables (kneser_ney.py, arpa.py, prune.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from malsori.errors import MalsoriError

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
NO_PROB = -99.0  # log10 probability listed for <s>, which is never predicted (SRILM and KenLM write the same)
WORD_BITS = 32  # low bits of a key hold the last word's id; the high bits the prefix row
WORD_MASK = (1 << WORD_BITS) - 1
LN10 = math.log(10.0)  # log10 → natural log


class NgramError(MalsoriError):
    """An n-gram LM cannot be trained, pruned or queried as asked (no text, bad order, no counts)."""


@dataclass
class NgramTable:
    """The n-grams of one order, sorted by key; row r of every array describes the same n-gram."""

    keys: np.ndarray  # int64, ascending: prefix row << 32 | last word id; for unigrams the word id (row == id)
    log10_prob: np.ndarray  # float64, log10 P(last word | the other words)
    log10_bow: np.ndarray  # float64, log10 backoff weight when the n-gram is a history (0: none; all 0 at top order)
    count: np.ndarray | None = None  # int64 raw count in the training text; None for a model read from ARPA

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def prefix_rows(self) -> np.ndarray:
        """Row of each n-gram's prefix (all words but the last) in the table one order down."""
        return self.keys >> WORD_BITS

    @property
    def last_words(self) -> np.ndarray:
        """Id of each n-gram's last word."""
        return self.keys & WORD_MASK

    def take(self, rows: np.ndarray, keys: np.ndarray | None = None) -> "NgramTable":
        """The table restricted to `rows` (ascending), with new keys when the prefix rows were renumbered."""
        return NgramTable(
            self.keys[rows] if keys is None else keys, self.log10_prob[rows], self.log10_bow[rows],
            None if self.count is None else self.count[rows],
        )


def find_rows(table: NgramTable, prefix: np.ndarray, word: np.ndarray) -> np.ndarray:
    """Rows of the n-grams (prefix row, word id) in `table`, −1 where absent (or where the prefix row is −1)."""
    if len(table) == 0:
        return np.full(len(word), -1, dtype=np.int64)
    key = (np.maximum(prefix, 0) << WORD_BITS) | word
    i = np.minimum(np.searchsorted(table.keys, key), len(table) - 1)
    return np.where((prefix >= 0) & (table.keys[i] == key), i, -1)


def rows_of(tables: Sequence[NgramTable], ids: np.ndarray) -> np.ndarray:
    """Row of each n-gram (a row of the [n, k] id matrix) in the table of order k, −1 where it is not listed."""
    rows = ids[:, 0].astype(np.int64)
    for j in range(1, ids.shape[1]):
        rows = find_rows(tables[j], rows, ids[:, j])
    return rows


def ngram_ids(tables: Sequence[NgramTable], k: int, rows: np.ndarray) -> np.ndarray:
    """The word ids ([len(rows), k+1]) of rows of table k (k = 0 for unigrams), by following the prefix rows."""
    out = np.empty((len(rows), k + 1), dtype=np.int64)
    r = np.asarray(rows, dtype=np.int64)
    for j in range(k, 0, -1):
        key = tables[j].keys[r]
        out[:, j] = key & WORD_MASK
        r = key >> WORD_BITS
    out[:, 0] = r
    return out


def find_row(table: NgramTable, prefix_row: int, word: int) -> int:
    """Row of the n-gram (prefix row, word id) in `table`, or -1."""
    keys = table.keys
    key = (prefix_row << WORD_BITS) | word
    i = int(np.searchsorted(keys, key))
    return i if i < len(keys) and keys[i] == key else -1


def ngram_row(tables: Sequence[NgramTable], ids: Sequence[int]) -> int:
    """Row of the n-gram `ids` in the table of its order, or -1 when it is not listed."""
    if not ids or len(ids) > len(tables):
        return -1
    r = ids[0]
    for k in range(1, len(ids)):
        r = find_row(tables[k], r, ids[k])
        if r < 0:
            return -1
    return r


def history_rows(tables: Sequence[NgramTable], history: Sequence[int]) -> list[int]:
    """rows[j] = row of the last j history words as a j-gram (-1 if not listed), j = 1 .. len(history)."""
    m = len(history)
    return [-1] + [ngram_row(tables, history[m - j:]) for j in range(1, m + 1)]


def backoff_log10prob(tables: Sequence[NgramTable], word: int, history: Sequence[int]) -> float:
    """log10 P(word | history) for ids, the ARPA backoff rule on the last len(tables) - 1 history words."""
    order = len(tables)
    history = history[-(order - 1):] if order > 1 else ()
    rows = history_rows(tables, history)
    backoff = 0.0
    for j in range(len(history), 0, -1):
        if rows[j] < 0:
            continue  # an unlisted history has no n-grams and a backoff weight of 1
        r = find_row(tables[j], rows[j], word)
        if r >= 0:
            return backoff + float(tables[j].log10_prob[r])
        backoff += float(tables[j - 1].log10_bow[rows[j]])
    return backoff + float(tables[0].log10_prob[word])
