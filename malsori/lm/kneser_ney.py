"""Interpolated modified Kneser–Ney (Chen & Goodman 1998), counted and estimated with numpy sorts.

For an n-gram h w of order k, with a(·) its count and D(a) one of three discounts D1, D2, D3+ of order k:

    P(w | h) = max(a(h w) − D(a(h w)), 0) / Σ_v a(h v)  +  γ(h) · P(w | h without its first word)
    γ(h)     = (D1 · N1(h ·) + D2 · N2(h ·) + D3+ · N3+(h ·)) / Σ_v a(h v)     (the backoff weight of h)

where Nr(h ·) counts the words seen r times (3+: at least 3) after h. At the top order a is the raw count; below
it a is the continuation count N1+(· h w), the number of different words seen before h w, except for n-grams
that start with <s>, which can have no word before them and keep their raw count. Unigrams interpolate with
the uniform distribution over the vocabulary (</s> and <unk> included, <s> never predicted), so <unk> gets
γ(empty)/|V|. Discounts come from each order's count-of-counts nr: Y = n1/(n1+2n2), D1 = 1−2Y·n2/n1,
D2 = 2−3Y·n3/n2, D3+ = 3−4Y·n4/n3.

Counting: sentences become one id stream; the k-grams at every position are keyed by (row of the (k−1)-gram
at that position, k-th word) and counted by one np.unique per order, which also gives each k-gram's suffix row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from malsori.lm.ngram_tables import BOS, EOS, NO_PROB, UNK, WORD_BITS, NgramError, NgramTable


@dataclass(frozen=True)
class KneserNeyConfig:
    """How discounts are chosen."""

    # D1, D2, D3+ used at an order whose count-of-counts give none in (0, r] (tiny corpora: some nr is 0); the
    # values KenLM's --discount_fallback uses
    discount_fallback: tuple[float, float, float] = (0.5, 1.0, 1.5)


def discounts_from_counts(
    adjusted: np.ndarray, fallback: tuple[float, float, float]
) -> tuple[tuple[float, float, float], bool]:
    """((D1, D2, D3+), whether the fallback was used) from one order's counts; zeros count for no nr."""
    n1, n2, n3, n4 = (int(np.count_nonzero(adjusted == r)) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < di <= r for r, di in zip((1, 2, 3), d)):
            return d, False
    return tuple(fallback), True


def _encode(sentences: Iterable[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(vocabulary: <unk>, <s>, </s> then the words sorted; id stream with <s> … </s> per sentence; lengths)."""
    index = {UNK: 0, BOS: 1, EOS: 2}
    stream: list[int] = []
    lengths: list[int] = []
    for words in sentences:
        if not words:
            continue
        stream.append(1)
        stream.extend([index.setdefault(w, len(index)) for w in words])
        stream.append(2)
        lengths.append(len(words) + 2)
    if not lengths:
        raise NgramError("no words in the training text")
    ids = np.asarray(stream, dtype=np.int64)
    if np.count_nonzero(ids < 3) != 2 * len(lengths):  # only the <s> and </s> added here may use ids 0-2
        raise NgramError(f"the training text contains a reserved word ({UNK}, {BOS} or {EOS})")
    words_sorted = sorted(w for w in index if w not in (UNK, BOS, EOS))
    vocab = [UNK, BOS, EOS] + words_sorted
    new_id = np.empty(len(index), dtype=np.int64)
    new_id[[index[w] for w in vocab]] = np.arange(len(vocab))
    return vocab, new_id[ids], np.asarray(lengths, dtype=np.int64)


def train_kneser_ney(
    sentences: Iterable[Sequence[str]], order: int, config: KneserNeyConfig
) -> tuple[list[str], list[NgramTable], list[tuple[float, float, float]]]:
    """(vocabulary, one table per order, discounts per order) of an interpolated modified Kneser–Ney LM."""
    if not isinstance(order, int) or order < 1:
        raise NgramError(f"the order must be an integer of at least 1, got {order!r}")
    vocab, tokens, lengths = _encode(sentences)
    order = min(order, int(lengths.max()))  # no k-gram fits in a text whose longest <s> … </s> is shorter than k
    v = len(vocab)
    ends = np.cumsum(lengths)
    left = np.repeat(ends, lengths) - np.arange(len(tokens))  # tokens from each position to its sentence's end

    # counting: keys, raw counts, suffix rows and first words of every order
    keys = [np.arange(v, dtype=np.int64)]
    counts = [np.bincount(tokens, minlength=v).astype(np.int64)]
    suffix = [np.zeros(0, dtype=np.int64)]  # unigrams have no suffix
    first = [np.arange(v, dtype=np.int64)]
    row_at = tokens  # row of the (k-1)-gram starting at each position (−1 where none fits)
    for k in range(2, order + 1):
        pos = np.flatnonzero(left >= k)  # not empty: order ≤ the longest sentence
        kk = (row_at[pos] << WORD_BITS) | tokens[pos + k - 1]
        uniq, first_pos, inverse, cnt = np.unique(kk, return_index=True, return_inverse=True, return_counts=True)
        suffix.append(row_at[pos[first_pos] + 1])  # the (k-1)-gram one position right ends at the same word
        keys.append(uniq)
        counts.append(cnt.astype(np.int64))
        first.append(first[-1][uniq >> WORD_BITS])
        row_at = np.full(len(tokens), -1, dtype=np.int64)
        row_at[pos] = inverse.reshape(-1)
    del row_at, tokens

    # adjusted counts: continuation counts below the top order, raw counts for n-grams starting with <s>
    adjusted = []
    for k in range(1, order + 1):
        if k == order:
            a = counts[k - 1].copy()
        else:
            a = np.bincount(suffix[k], minlength=len(keys[k - 1])).astype(np.int64)
            a = np.where(first[k - 1] == 1, counts[k - 1], a)
        if k == 1:
            a[1] = 0  # <s> is never predicted
        adjusted.append(a)

    discounts = []
    tables: list[NgramTable] = []
    prob = np.zeros(0)  # the order below's probabilities (linear, so no precision is lost through log10)
    for k in range(1, order + 1):
        a = adjusted[k - 1]
        d, _ = discounts_from_counts(a[a > 0] if k == 1 else a, config.discount_fallback)
        discounts.append(d)
        dvec = np.array((0.0,) + d)[np.minimum(a, 3)]
        if k == 1:
            total = int(a.sum())
            gamma = dvec.sum() / total
            prob = (a - dvec) / total + gamma / (v - 1)  # uniform over every id but <s>
            prob[1] = 0.0
        else:
            ctx = keys[k - 1] >> WORD_BITS
            n_ctx = len(keys[k - 2])
            total = np.bincount(ctx, weights=a, minlength=n_ctx)
            mass = np.bincount(ctx, weights=dvec, minlength=n_ctx)
            has = total > 0
            gamma = np.divide(mass, total, out=np.zeros(n_ctx), where=has)
            prob = (a - dvec) / total[ctx] + gamma[ctx] * prob[suffix[k - 1]]
            tables[-1].log10_bow = np.where(has, np.log10(np.where(has, gamma, 1.0)), 0.0)
        with np.errstate(divide="ignore"):
            logp = np.log10(prob)
        if k == 1:
            logp[1] = NO_PROB
        tables.append(NgramTable(keys[k - 1], logp, np.zeros(len(keys[k - 1])), counts[k - 1]))
    return vocab, tables, discounts
