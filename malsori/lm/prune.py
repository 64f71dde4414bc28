"""Pruning a backoff n-gram LM by count or by size, keeping every distribution normalized.

Dropping n-grams leaves the listed probabilities of the others as they were; only the backoff weights change.
For a history h whose kept continuations are W(h):

    bow(h) = (1 − Σ_{w∈W(h)} P(w | h)) / (1 − Σ_{w∈W(h)} P(w | h′))          (h′: h without its first word)

which makes Σ_w P(w | h) = 1 again. An n-gram that is the prefix or suffix of a kept longer one is kept, so
the model's invariant (prefixes and suffixes listed) holds and P(w | h′) of a kept h w is always listed.

By size, n-grams go in the order of Stolcke's (1998) criterion, the relative entropy the model gains when
that one n-gram is dropped and bow(h) recomputed:

    ΔH(h w) = −P(h) · [ P(w|h) · (ln P(w|h′) + ln bow′(h) − ln P(w|h)) + num(h) · (ln bow′(h) − ln bow(h)) ]

with num(h) = 1 − Σ_{W(h)} P(·|h), den(h) = 1 − Σ_{W(h)} P(·|h′), bow′(h) = (num + P(w|h)) / (den + P(w|h′)),
and P(h) the chain-rule probability of the history (P(<s>) taken as P(</s>): one of each per sentence).
An n-gram's rank is the largest criterion among it and the longer n-grams that need it, so dropping the lowest
ranks never drops a prefix or suffix that a kept n-gram needs.
"""

from __future__ import annotations

import numpy as np

from malsori.lm.ngram_tables import WORD_BITS, NgramError, NgramTable, find_rows


def suffix_rows(tables: list[NgramTable]) -> list[np.ndarray]:
    """out[k] = row in table k−1 of the suffix (all words but the first) of every n-gram of table k, −1 where it
    is not listed; out[0] is empty (unigrams have no suffix)."""
    out = [np.zeros(0, dtype=np.int64)]
    for k in range(1, len(tables)):
        t = tables[k]
        # the suffix of (w1 .. wk) is (suffix of its prefix, wk); for bigrams the unigram row of wk
        out.append(t.last_words if k == 1 else find_rows(tables[k - 1], out[k - 1][t.prefix_rows], t.last_words))
    return out


def _history_sums(tables: list[NgramTable], k: int, suffix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(num, den) per row of table k−1: 1 − Σ P(w|h) and 1 − Σ P(w|h′) over the listed continuations h w."""
    t = tables[k]
    ctx = t.prefix_rows
    n = len(tables[k - 1])
    num = 1.0 - np.bincount(ctx, weights=10.0 ** t.log10_prob, minlength=n)
    den = 1.0 - np.bincount(ctx, weights=10.0 ** tables[k - 1].log10_prob[suffix], minlength=n)
    return num, den


def recompute_backoffs(tables: list[NgramTable]) -> None:
    """Set every backoff weight from the listed probabilities so each history's distribution sums to 1."""
    suffixes = suffix_rows(tables)
    for k in range(1, len(tables)):
        if np.any(suffixes[k] < 0):
            raise NgramError("a listed n-gram's suffix is not listed; cannot recompute backoff weights")
        num, den = _history_sums(tables, k, suffixes[k])
        has = np.zeros(len(tables[k - 1]), dtype=bool)
        has[tables[k].prefix_rows] = True
        ok = has & (num > 0) & (den > 0)
        tables[k - 1].log10_bow = np.where(ok, np.log10(np.where(ok, num, 1.0) / np.where(ok, den, 1.0)), 0.0)
    tables[-1].log10_bow = np.zeros(len(tables[-1]))


def history_probs(tables: list[NgramTable], bos: int, eos: int) -> list[np.ndarray]:
    """P(n-gram as a word sequence) for every row of every table, by the chain rule over listed probabilities
    (`bos`, `eos`: the ids of <s> and </s>)."""
    p1 = 10.0 ** tables[0].log10_prob
    p1[bos] = p1[eos]
    out = [p1]
    for t in tables[1:]:
        out.append(out[-1][t.prefix_rows] * 10.0 ** t.log10_prob)
    return out


def stolcke_criterion(tables: list[NgramTable], bos: int, eos: int, suffixes: list[np.ndarray]) -> list[np.ndarray]:
    """ΔH of dropping each n-gram alone (see the module docstring), per table; unigrams get +inf."""
    joint = history_probs(tables, bos, eos)
    out = [np.full(len(tables[0]), np.inf)]
    for k in range(1, len(tables)):
        t = tables[k]
        suffix = suffixes[k]
        num, den = _history_sums(tables, k, suffix)
        ctx = t.prefix_rows
        p = 10.0 ** t.log10_prob
        q = 10.0 ** tables[k - 1].log10_prob[suffix]
        num_h, den_h = np.maximum(num[ctx], 0.0), np.maximum(den[ctx], 0.0)
        bow = tables[k - 1].log10_bow[ctx] * np.log(10.0)
        new_bow = np.log((num_h + p) / (den_h + q))
        with np.errstate(divide="ignore", invalid="ignore"):
            kept_mass = np.where(num_h > 0, num_h * (new_bow - bow), 0.0)
        out.append(-joint[k - 1][ctx] * (p * (np.log(q) + new_bow - np.log(p)) + kept_mass))
    return out


def _close(tables: list[NgramTable], keep: list[np.ndarray]) -> None:
    """Keep the prefix and the suffix of every kept n-gram (in place), longest order first."""
    suffixes = suffix_rows(tables)
    for k in range(len(tables) - 1, 1, -1):
        keep[k - 1][tables[k].prefix_rows[keep[k]]] = True
        keep[k - 1][suffixes[k][keep[k]]] = True


def prune_tables(tables: list[NgramTable], bos: int, eos: int, min_count: int | None = None,
                 max_ngrams: int | None = None) -> list[NgramTable]:
    """New tables without the pruned n-grams, backoff weights recomputed (see NgramLM.prune); `bos`, `eos`: the
    ids of <s> and </s>."""
    keep = [np.ones(len(t), dtype=bool) for t in tables]
    if min_count is not None:
        if min_count < 1:
            raise NgramError(f"min_count must be at least 1, got {min_count}")
        if any(t.count is None for t in tables):
            raise NgramError("pruning by count needs the training counts; a model read from ARPA has none "
                             "(prune it by size, or prune when training)")
        for k in range(1, len(tables)):
            keep[k] = tables[k].count >= min_count
        _close(tables, keep)
    if max_ngrams is not None:
        if max_ngrams < len(tables[0]):
            raise NgramError(f"max_ngrams {max_ngrams} is below the {len(tables[0])} unigrams, which are never pruned")
        tables = _apply(tables, keep)
        keep = [np.ones(len(t), dtype=bool) for t in tables]
        recompute_backoffs(tables)
        suffixes = suffix_rows(tables)
        rank = stolcke_criterion(tables, bos, eos, suffixes)
        for k in range(len(tables) - 1, 1, -1):  # a prefix or suffix ranks at least as high as what needs it
            np.maximum.at(rank[k - 1], tables[k].prefix_rows, rank[k])
            np.maximum.at(rank[k - 1], suffixes[k], rank[k])
        total = sum(len(t) for t in tables)
        if total > max_ngrams:
            ranks = np.concatenate(rank[1:])
            orders = np.concatenate([np.full(len(t), k) for k, t in enumerate(tables[1:], 1)])
            drop = np.lexsort((-orders, ranks))[: total - max_ngrams]  # lowest rank first, longer first on ties
            flat = np.ones(len(ranks), dtype=bool)
            flat[drop] = False
            starts = np.cumsum([0] + [len(t) for t in tables[1:]])
            for k in range(1, len(tables)):
                keep[k] = flat[starts[k - 1]:starts[k]]
    out = _apply(tables, keep)
    while len(out) > 1 and len(out[-1]) == 0:  # no n-gram of the top order left: a model of lower order
        out.pop()
    recompute_backoffs(out)
    return out


def _apply(tables: list[NgramTable], keep: list[np.ndarray]) -> list[NgramTable]:
    """The tables restricted to kept rows, prefix rows renumbered."""
    out = [tables[0].take(np.flatnonzero(keep[0]))]
    for k in range(1, len(tables)):
        new_row = np.cumsum(keep[k - 1]) - 1  # old row in table k−1 → new row (kept rows only)
        rows = np.flatnonzero(keep[k])
        t = tables[k]
        keys = (new_row[t.prefix_rows[rows]] << WORD_BITS) | t.last_words[rows]
        out.append(t.take(rows, keys))
    return out
