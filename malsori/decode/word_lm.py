"""Word n-gram LM fusion for character and subword outputs: the word LM scores a word when the word is complete.

Tokens make words the way the tokenizers spell them: a piece that starts with `▁` starts a new word (the char
tokenizer's lone `▁` is the space). A word is complete when the next word starts, or at the end of the output
(eos, or `final_score` in the searches that have no eos), where `</s>` is scored too. A word the LM does not
know is scored as `<unk>`: the LM's P(<unk> | history), or a fixed `unk_logprob` (pyctcdecode's way).

Lookahead (on by default) scores a partial word p by L(h, p), an upper bound of the log-probability of every word
that can still come out of it: the best of P(<unk> | h) and max P(w | h) over the LM's words w that start with p
(found on the sorted vocabulary: the words with prefix p are one range). A word's tokens score the differences
L(h, p + piece) − L(h, p), so they telescope: when the word is complete its tokens have scored exactly
log P(word | h), and a hypothesis' LM score is its sentence log-probability, as without lookahead. Without it a
misspelled partial word keeps its full acoustic score until the word ends and can push correct ones out of the
beam; with it the partial word pays, as it goes, what it can at best get. L is an upper bound and shrinks as p
grows (the ranges nest), so every score stays ≤ 0, as the searches' early stop needs. The bound over
n-gram orders: max over each order j of (the backoff weights above j + the best listed j-gram in the range),
exact for the words listed at the highest order, an upper bound for the rest.

`WordCountScorer` scores 1 per completed word: with weight β it is the word insertion bonus.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from malsori.decode.scorers import Scorer, State, WeightedScorer
from malsori.lm.ngram import BOS, EOS, LN10, UNK, NgramLM, WORD_BITS
from malsori.tokenizer import SPECIAL_IDS, WORD, SpecialIds, Tokenizer

UNK_CHAR = "\ufffd"  # the partial-word text of the ASR model's <unk> token: in no LM word, so the word is <unk>
CACHE_ROWS = 100_000  # contexts whose next-token scores are kept (then every cache starts again)


class WordPieces:
    """How each token id of an ASR vocabulary adds to words: `starts[i]` (it begins a new word) and `text[i]` (the
    characters it adds; None for blank, which adds nothing)."""

    def __init__(self, pieces: Sequence[str], ids: SpecialIds = SPECIAL_IDS) -> None:
        self.eos = ids.eos
        self.starts = [p.startswith(WORD) for p in pieces]
        self.text: list[str | None] = [p[len(WORD):] if s else p for p, s in zip(pieces, self.starts)]
        self.text[ids.blank] = None
        self.text[ids.unk] = UNK_CHAR
        self.starts[ids.blank] = self.starts[ids.unk] = False

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "WordPieces":
        return cls([tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)], tokenizer.special_ids)

    def __len__(self) -> int:
        return len(self.starts)


class _Contexts:
    """Interned (history, partial word) contexts: a scorer's state holds their ids, one per prefix."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str, ...], str]] = []
        self.ids: dict[tuple[tuple[str, ...], str], int] = {}

    def id(self, ctx: tuple[tuple[str, ...], str]) -> int:
        found = self.ids.get(ctx)
        if found is None:
            found = self.ids[ctx] = len(self.items)
            self.items.append(ctx)
        return found


class WordNgramScorer(Scorer):
    """A word n-gram LM as a token scorer (see the module docstring). State: {"ctx": [N] context ids}."""

    def __init__(self, lm: NgramLM, pieces: WordPieces, lookahead: bool = True,
                 unk_logprob: float | None = None) -> None:
        self.lm, self.pieces, self.lookahead, self.unk_logprob = lm, pieces, lookahead, unk_logprob
        self.contexts = _Contexts()
        self._rows: dict[int, tuple[Tensor, list[int]]] = {}  # context id → (scores [V], next context ids)
        self._words: dict[tuple[tuple[str, ...], str], tuple[float, tuple[str, ...]]] = {}
        self._bounds: dict[tuple[tuple[str, ...], str], float] = {}
        self._levels: dict[tuple[str, ...], list[tuple[float, np.ndarray, np.ndarray]]] = {}
        if lookahead:
            words = [w for w in lm.vocab if w not in (BOS, EOS, UNK)]
            self.sorted_words = sorted(words)
            rank = {w: r for r, w in enumerate(self.sorted_words)}
            self.rank_of_id = np.array([rank.get(w, -1) for w in lm.vocab], dtype=np.int64)
            self._unigram = lm.tables[0].log10_prob[np.array(lm.ids(self.sorted_words), dtype=np.int64)]

    # --- the scorer protocol -------------------------------------------------------------------------------------

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        ctx = self.contexts.id((self.lm.initial_state(), ""))
        for token in prompt:
            ctx = self._row(ctx)[1][int(token)]
        return {"ctx": torch.full((n,), ctx, dtype=torch.long)}

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        ctx = state["ctx"].tolist()
        scores = torch.stack([self._row(c)[0] for c in ctx]) if ctx else torch.zeros(0, len(self.pieces))
        scores = scores.to(state["ctx"].device)
        return (scores if candidates is None else scores.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        ctx = state["ctx"].index_select(0, index).tolist()
        new = [self._row(c)[1][t] for c, t in zip(ctx, tokens.tolist())]
        return {"ctx": torch.tensor(new, dtype=torch.long, device=state["ctx"].device)}

    def final_score(self, state: State) -> Tensor:
        eos = self.pieces.eos
        return torch.tensor([float(self._row(c)[0][eos]) for c in state["ctx"].tolist()], dtype=torch.float64)

    # --- one context's next-token scores ---------------------------------------------------------------------------

    def _row(self, ctx_id: int) -> tuple[Tensor, list[int]]:
        """(natural-log scores of every next token [V], the context each token leads to), computed once."""
        found = self._rows.get(ctx_id)
        if found is not None:
            return found
        if len(self._rows) >= CACHE_ROWS:  # the caches are recomputable: bound their memory over long runs
            for cache in (self._rows, self._words, self._bounds, self._levels):
                cache.clear()
        hist, partial = self.contexts.items[ctx_id]
        here = self._bound(hist, partial)
        done, after = self._word(hist, partial) if partial else (0.0, hist)  # completing the partial word
        scores, nxt = [], []
        for i, (starts, text) in enumerate(zip(self.pieces.starts, self.pieces.text)):
            if i == self.pieces.eos:
                scores.append(done - here + self.lm.score(after, EOS)[0])
                nxt.append(self.contexts.id((after, "")))
            elif text is None:  # blank: not a label
                scores.append(0.0)
                nxt.append(ctx_id)
            elif starts:
                scores.append(done - here + self._bound(after, text))
                nxt.append(self.contexts.id((after, text)))
            else:
                scores.append(self._bound(hist, partial + text) - here)
                nxt.append(self.contexts.id((hist, partial + text)))
        found = self._rows[ctx_id] = (torch.tensor(scores, dtype=torch.float32), nxt)
        return found

    def _word(self, hist: tuple[str, ...], word: str) -> tuple[float, tuple[str, ...]]:
        """(log P(word | hist), the history after it); a word the LM does not know is <unk>."""
        key = (hist, word)
        found = self._words.get(key)
        if found is None:
            known = word in self.lm.word_id and word not in (BOS, EOS, UNK)
            lp, after = self.lm.score(hist, word if known else UNK)
            if not known and self.unk_logprob is not None:
                lp = self.unk_logprob
            found = self._words[key] = (lp, after)
        return found

    def _bound(self, hist: tuple[str, ...], partial: str) -> float:
        """L(hist, partial): an upper bound of log P(w | hist) over the words w that can still come out of
        `partial` (<unk> included); 0 for the empty partial word or without lookahead."""
        if not partial or not self.lookahead:
            return 0.0
        key = (hist, partial)
        found = self._bounds.get(key)
        if found is not None:
            return found
        best = self._word(hist, UNK)[0] if self.unk_logprob is None else self.unk_logprob
        lo = bisect.bisect_left(self.sorted_words, partial)
        hi = bisect.bisect_left(self.sorted_words, partial + "\U0010ffff", lo)
        if hi > lo:
            for above, ranks, probs in self._history_levels(hist):
                if ranks is None:  # unigrams: every word is listed, in rank order
                    best = max(best, (above + float(self._unigram[lo:hi].max())) * LN10)
                    continue
                a, b = np.searchsorted(ranks, [lo, hi])
                if b > a:
                    best = max(best, (above + float(probs[a:b].max())) * LN10)
        self._bounds[key] = best
        return best

    def _history_levels(self, hist: tuple[str, ...]) -> list[tuple[float, np.ndarray | None, np.ndarray | None]]:
        """Per order j with the last j history words listed (unigrams: j = 0): (log10 backoff weights of the longer
        listed histories, the ranks of the words listed after the j words (sorted), their log10 probabilities)."""
        found = self._levels.get(hist)
        if found is not None:
            return found
        lm = self.lm
        ids = lm.ids(hist)[-(lm.order - 1):] if lm.order > 1 else []
        levels, above = [], 0.0
        for j in range(len(ids), 0, -1):
            r = lm.row(ids[len(ids) - j:])
            if r < 0:
                continue
            table = lm.tables[j]
            a, b = np.searchsorted(table.keys, [r << WORD_BITS, (r + 1) << WORD_BITS])
            ranks = self.rank_of_id[table.last_words[a:b]]
            keep = ranks >= 0
            order = np.argsort(ranks[keep])
            levels.append((above, ranks[keep][order], table.log10_prob[a:b][keep][order]))
            above += float(lm.tables[j - 1].log10_bow[r])
        levels.append((above, None, None))
        self._levels[hist] = levels
        return levels


class WordCountScorer(Scorer):
    """1 per completed word (a word-start piece or eos after a partial word; `final_score` for the last one), so
    its weight is a word insertion bonus. State: {"open": [N] whether a partial word is open}."""

    max_score = 1.0  # not a log-probability: one step scores up to 1

    def __init__(self, pieces: WordPieces) -> None:
        self.pieces = pieces
        ends = [s or i == pieces.eos for i, s in enumerate(pieces.starts)]
        self.ends = torch.tensor(ends, dtype=torch.bool)
        adds = torch.tensor([bool(t) for t in pieces.text])  # the token adds characters to the partial word
        starts = torch.tensor(pieces.starts)
        # "open" after each token [V, 2], given "open" before (column): a word start leaves open what it adds, other
        # pieces add to an open word, eos closes, blank keeps
        after = torch.stack((adds, torch.where(starts, adds, True)), 1)
        after[pieces.eos] = False
        blank = torch.tensor([t is None for t in pieces.text])
        after[blank] = torch.tensor([False, True])
        self.after = after  # [V, 2]

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        state = {"open": torch.zeros(n, dtype=torch.bool)}
        for token in prompt:
            state = self.extend(state, torch.arange(n), torch.full((n,), int(token)))
        return state

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        scores = (state["open"][:, None] & self.ends[None].to(state["open"].device)).float()
        return (scores if candidates is None else scores.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        was = state["open"].index_select(0, index)
        return {"open": self.after.to(was.device)[tokens.to(was.device), was.long()]}

    def final_score(self, state: State) -> Tensor:
        return state["open"].double()


def word_lm_scorers(lm: NgramLM, tokenizer: Tokenizer | WordPieces, weight: float, word_bonus: float = 0.0,
                    lookahead: bool = True, unk_logprob: float | None = None) -> tuple[WeightedScorer, ...]:
    """The extra scorers of word n-gram fusion for `DecodeOptions.scorers`: "lm" (weight λ) and "words" (weight β,
    the word insertion bonus); those of weight 0 are left out."""
    pieces = tokenizer if isinstance(tokenizer, WordPieces) else WordPieces.of(tokenizer)
    out = []
    if weight != 0:
        out.append(WeightedScorer("lm", WordNgramScorer(lm, pieces, lookahead, unk_logprob), weight))
    if word_bonus != 0:
        out.append(WeightedScorer("words", WordCountScorer(pieces), word_bonus))
    return tuple(out)
