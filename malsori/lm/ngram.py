"""A word n-gram language model in backoff (ARPA) form: tables of log10 probabilities and backoff weights.

`NgramLM.train` fits interpolated modified Kneser–Ney (malsori/lm/kneser_ney.py), `read_arpa` / `write_arpa`
move models to and from other toolkits (malsori/lm/arpa.py), `prune` drops n-grams by count or by size and
recomputes the backoff weights so every distribution still sums to one (malsori/lm/prune.py). Queries follow
the ARPA rule: P(w | h) is the listed probability of h w, else bow(h) · P(w | h without its first word).

Storage is one sorted int64 key array per order, key = (row of the n-gram's prefix one order down) << 32 | id of
its last word, so an n-gram is found by one binary search per word and a model costs ~24 bytes per n-gram.
Invariant of every model built here: the prefix and the suffix of every listed n-gram are listed too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from malsori.lm.arpa import read_arpa, write_arpa
from malsori.lm.kneser_ney import KneserNeyConfig, train_kneser_ney
from malsori.lm.ngram_tables import (  # noqa: F401  (table names this module has always offered)
    BOS, EOS, LN10, NO_PROB, UNK, WORD_BITS, WORD_MASK, NgramError, NgramTable, backoff_log10prob, find_rows,
    history_rows, ngram_ids, ngram_row, rows_of,
)
from malsori.lm.prune import prune_tables
from malsori.text import normalize


@dataclass
class Perplexity:
    """Totals of scoring sentences; OOV words are scored as <unk> in `log10_prob` and left out of
    `log10_prob_known` (the two conventions of KenLM and SRILM)."""

    sentences: int = 0  # sentences scored (each ends with </s>, which is scored too)
    words: int = 0  # words scored, </s> not included
    oovs: int = 0  # words not in the vocabulary
    log10_prob: float = 0.0  # sum of log10 P over words and </s>, OOVs as <unk>
    log10_prob_known: float = 0.0  # the same sum without the OOV words

    @property
    def ppl(self) -> float:
        """Perplexity per word (</s> counted as a word), OOVs scored as <unk>."""
        n = self.words + self.sentences
        return 10.0 ** (-self.log10_prob / n) if n else float("nan")

    @property
    def ppl_known(self) -> float:
        """Perplexity per in-vocabulary word (</s> counted), OOVs left out (SRILM's `ppl`)."""
        n = self.words + self.sentences - self.oovs
        return 10.0 ** (-self.log10_prob_known / n) if n else float("nan")

    @property
    def oov_rate(self) -> float:
        """Fraction of words (</s> not counted) that are not in the vocabulary."""
        return self.oovs / self.words if self.words else 0.0

    def add(self, other: "Perplexity") -> None:
        """Accumulate another result into this one."""
        self.sentences += other.sentences
        self.words += other.words
        self.oovs += other.oovs
        self.log10_prob += other.log10_prob
        self.log10_prob_known += other.log10_prob_known


def sentence_words(sentence: str | Sequence[str]) -> list[str]:
    """Words of a sentence: text goes through the shared normalizer (malsori.text), a word list is kept as is."""
    return normalize(sentence).split() if isinstance(sentence, str) else list(sentence)


class NgramLM:
    """A backoff word n-gram LM: `vocab` (ids 0.. in table order) and one `NgramTable` per order.

    Log-probabilities returned by `logprob`, `score` and `score_sentence` are natural logs, like every scorer in
    malsori.decode; `log10prob` and the tables use log10, like ARPA files.
    """

    def __init__(self, vocab: list[str], tables: list[NgramTable],
                 discounts: list[tuple[float, float, float]] | None = None):
        if not tables:
            raise NgramError("an n-gram LM needs at least the unigram table")
        if len(tables[0]) != len(vocab):
            raise NgramError(f"{len(vocab)} words but {len(tables[0])} unigrams")
        self.vocab = vocab
        self.tables = tables
        self.word_id = {w: i for i, w in enumerate(vocab)}
        for special in (UNK, BOS, EOS):
            if special not in self.word_id:
                raise NgramError(f"the vocabulary has no {special}")
        self.unk, self.bos, self.eos = self.word_id[UNK], self.word_id[BOS], self.word_id[EOS]
        self.discounts = discounts  # (D1, D2, D3+) per order as trained; None for a model read from ARPA

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, sentences: Iterable[str | Sequence[str]], order: int = 3,
              config: KneserNeyConfig | None = None) -> "NgramLM":
        """Interpolated modified Kneser–Ney on sentences (text is normalized; see `sentence_words`). The order
        is lowered to the longest padded sentence when no n-gram of the asked order fits."""
        cfg = config if config is not None else KneserNeyConfig()
        vocab, tables, discounts = train_kneser_ney((sentence_words(s) for s in sentences), order, cfg)
        return cls(vocab, tables, discounts)

    @classmethod
    def read_arpa(cls, path: str | os.PathLike) -> "NgramLM":
        """A model from an ARPA file (plain or .gz), from malsori or any other toolkit."""
        vocab, tables = read_arpa(path)
        return cls(vocab, tables)

    def write_arpa(self, path: str | os.PathLike, digits: int | None = None) -> None:
        """Write the model as ARPA (gzip when the name ends in .gz); `digits` significant digits, or None for
        the shortest text that reads back to the same float (exact round trip)."""
        write_arpa(self.vocab, self.tables, path, digits)

    def prune(self, min_count: int | None = None, max_ngrams: int | None = None) -> "NgramLM":
        """A pruned copy: n-grams (order ≥ 2) seen fewer than `min_count` times dropped, then the least useful
        (Stolcke's relative entropy) until at most `max_ngrams` n-grams of all orders remain; backoff weights are
        recomputed so the model stays normalized. Unigrams are never dropped."""
        return NgramLM(self.vocab, prune_tables(self.tables, self.bos, self.eos, min_count, max_ngrams), self.discounts)

    # --- shape --------------------------------------------------------------------------------------------------

    @property
    def order(self) -> int:
        """n of the longest n-grams."""
        return len(self.tables)

    @property
    def num_ngrams(self) -> list[int]:
        """Number of n-grams of each order, unigrams first."""
        return [len(t) for t in self.tables]

    def nbytes(self) -> int:
        """Bytes held by the tables' arrays (the vocabulary's strings not counted)."""
        return sum(a.nbytes for t in self.tables for a in (t.keys, t.log10_prob, t.log10_bow, t.count) if a is not None)

    def ids(self, words: Iterable[str]) -> list[int]:
        """Word ids, <unk>'s id for words not in the vocabulary."""
        return [self.word_id.get(w, self.unk) for w in words]

    # --- queries ------------------------------------------------------------------------------------------------

    def row(self, ids: Sequence[int]) -> int:
        """Row of the n-gram `ids` in the table of its order, or -1 when it is not listed."""
        return ngram_row(self.tables, ids)

    def log10prob_ids(self, word: int, history: Sequence[int]) -> float:
        """log10 P(word | history) for ids, the ARPA backoff rule on the last order-1 history words."""
        return backoff_log10prob(self.tables, word, history)

    def log10prob(self, word: str, history: Sequence[str] = ()) -> float:
        """log10 P(word | history); words not in the vocabulary are <unk>."""
        return self.log10prob_ids(self.word_id.get(word, self.unk), self.ids(history))

    def logprob(self, word: str, history: Sequence[str] = ()) -> float:
        """Natural-log P(word | history); words not in the vocabulary are <unk>."""
        return self.log10prob(word, history) * LN10

    def log10probs(self, history: Sequence[str] = ()) -> np.ndarray:
        """log10 P(w | history) for every word id at once (the <s> entry is its listed -99): one vectorized
        pass per history length, used to check normalization and by scorers that want the whole distribution."""
        ids = self.ids(history)
        ids = ids[-(self.order - 1):] if self.order > 1 else []
        out = self.tables[0].log10_prob.copy()
        rows = history_rows(self.tables, ids)
        for j in range(1, len(ids) + 1):
            if rows[j] < 0:
                continue
            out += self.tables[j - 1].log10_bow[rows[j]]
            t = self.tables[j]
            lo, hi = np.searchsorted(t.keys, [rows[j] << WORD_BITS, (rows[j] + 1) << WORD_BITS])
            out[t.keys[lo:hi] & WORD_MASK] = t.log10_prob[lo:hi]
        return out

    # --- scoring as a search would ------------------------------------------------------------------------------

    def initial_state(self, bos: bool = True) -> tuple[str, ...]:
        """The state before the first word: the history ("<s>",), or () to score a fragment without it."""
        return (BOS,) if bos else ()

    def is_history(self, ids: Sequence[int]) -> bool:
        """Whether an n-gram can change a later probability as a history: it is listed with longer n-grams
        after it or with a backoff weight other than 1."""
        r = self.row(ids)
        if r < 0 or len(ids) >= self.order:
            return False
        if self.tables[len(ids) - 1].log10_bow[r] != 0.0:
            return True
        keys = self.tables[len(ids)].keys
        i = int(np.searchsorted(keys, r << WORD_BITS))
        return i < len(keys) and keys[i] >> WORD_BITS == r

    def score(self, state: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        """(natural-log P(word | state), the state after it). The new state is the longest suffix of the
        history that is a history of the model (`is_history`); nothing before it can change a later score, so
        equal states mean equal futures and a search can merge hypotheses on them. OOV words become <unk>."""
        w = word if word in self.word_id else UNK
        lp = self.log10prob_ids(self.word_id[w], self.ids(state)) * LN10
        hist = (tuple(state) + (w,))[-(self.order - 1):] if self.order > 1 else ()
        ids = self.ids(hist)
        for start in range(len(ids)):
            if self.is_history(ids[start:]):
                return lp, hist[start:]
        return lp, ()

    def score_sentence(self, sentence: str | Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Natural-log probability of a sentence (text is normalized), with <s> as first history and </s>
        scored at the end unless turned off."""
        return self.log10_sentence(sentence_words(sentence), bos, eos) * LN10

    def log10_sentence(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """log10 probability of a word list, OOVs as <unk> (see score_sentence)."""
        ids = ([self.bos] if bos else []) + self.ids(words) + ([self.eos] if eos else [])
        start = 1 if bos else 0
        n = self.order - 1
        return sum(self.log10prob_ids(ids[i], ids[max(0, i - n):i]) for i in range(start, len(ids)))

    def perplexity(self, sentences: Iterable[str | Sequence[str]]) -> Perplexity:
        """Perplexity totals over sentences (normalized text or word lists), each with <s> and </s>."""
        out = Perplexity()
        n = self.order - 1
        for sentence in sentences:
            words = sentence_words(sentence)
            if not words:
                continue
            ids = [self.bos] + self.ids(words) + [self.eos]
            out.sentences += 1
            out.words += len(words)
            for i in range(1, len(ids)):
                lp = self.log10prob_ids(ids[i], ids[max(0, i - n):i])
                out.log10_prob += lp
                if ids[i] == self.unk:
                    out.oovs += 1
                else:
                    out.log10_prob_known += lp
        return out
