"""CTC search: greedy (best path) and prefix beam search over per-frame log-probabilities.

Both take log_probs [B, T, V] and lengths [B] and return one `Hypothesis` per utterance. Frames past an
utterance's length are ignored, so padded batches give the same results as single utterances. The prefix beam
search adds extra scorers (and a length bonus) to a prefix's score each time a label extends it (`PrefixFusion`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.fusion import PrefixFusion, active
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import WeightedScorer
from malsori.nn.mask import length_mask
from malsori.tokenizer import SPECIAL_IDS

NEG_INF = float("-inf")


def ctc_greedy(
    log_probs: Tensor, lengths: Tensor, blank_id: int = SPECIAL_IDS.blank, prev_ids: Tensor | None = None, frame_offset: int = 0
) -> list[Hypothesis]:
    """Best path: argmax per frame, collapse repeats, drop blanks. Score = sum of the per-frame max log-probs.

    Streaming: `prev_ids` [B] = the argmax of the frame just before these (a run continuing across the boundary is
    not emitted twice) and `frame_offset` = that frame's index + 1, so `token_frames` count from the stream start.
    """
    best, ids = log_probs.max(dim=-1)  # [B, T]
    valid = length_mask(lengths.to(ids.device), ids.size(1))
    first = torch.full_like(ids[:, :1], -1) if prev_ids is None else prev_ids.view(-1, 1).to(ids)
    prev = torch.cat((first, ids[:, :-1]), dim=1)
    emit = valid & (ids != blank_id) & (ids != prev)  # first frame of each non-blank run
    scores = best.masked_fill(~valid, 0.0).sum(dim=1).tolist()
    ids_list, emit_list = ids.tolist(), emit.tolist()
    hyps = []
    for b in range(len(ids_list)):
        frames = [t for t, e in enumerate(emit_list[b]) if e]
        hyps.append(Hypothesis([ids_list[b][t] for t in frames], scores[b], [t + frame_offset for t in frames]))
    return hyps


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats, safe with -inf."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _PrefixTrie:
    """Label prefixes as trie nodes, so extending or looking up a prefix costs O(1) whatever its length."""

    def __init__(self) -> None:
        self.parent, self.token = [-1], [-1]  # node 0 is the empty prefix
        self.children: dict[tuple[int, int], int] = {}

    def child(self, node: int, token: int) -> int:
        key = (node, token)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = len(self.parent)
            self.parent.append(node)
            self.token.append(token)
        return found

    def tokens(self, node: int) -> list[int]:
        out = []
        while node > 0:
            out.append(self.token[node])
            node = self.parent[node]
        return out[::-1]


def _unlink(frames: tuple | None) -> list[int]:
    """Frames stored as a linked list (t, previous) → [t0, t1, ...]."""
    out = []
    while frames is not None:
        out.append(frames[0])
        frames = frames[1]
    return out[::-1]


class PrefixBeamSearch:
    """CTC prefix beam search over one utterance, fed frames as they arrive (`advance`), readable at any time.

    Each prefix keeps log P(prefix, path ends in blank) and log P(prefix, path ends in its last token); a token
    equal to the prefix's last one extends it only from a blank-ending path (otherwise it is a repeat that
    collapses). With `fusion` (extra scorers over the trie's nodes, root 0) prefixes are ranked by that CTC
    log-probability + their fused score; a hypothesis' `scores` then hold "ctc" and each extra scorer's part.
    """

    def __init__(self, beam: int, blank_id: int = SPECIAL_IDS.blank, fusion: PrefixFusion | None = None) -> None:
        self.beam, self.blank_id, self.frames_seen, self.fusion = beam, blank_id, 0, fusion
        self.trie = _PrefixTrie()
        # prefix node -> [log p_blank, log p_nonblank, emission frames, log-prob of the contribution that set the
        # frames, log P(prefix)]; frames are a linked list (t, previous) so extending one copies nothing
        self.beams: dict[int, list] = {0: [0.0, NEG_INF, None, 0.0, 0.0]}

    def advance(self, lp: list[list[float]], ids: list[list[int]], blank_lp: list[float]) -> None:
        """Per new frame: the candidate token ids, their log-probs and the blank log-prob."""
        trie, blank_id, fusion = self.trie, self.blank_id, self.fusion
        for lp_t, ids_t, blank_t in zip(lp, ids, blank_lp):
            t = self.frames_seen
            nxt: dict[int, list] = {}
            if fusion is not None:
                fusion.prepare(list(self.beams))  # the next-label scores of every prefix about to be extended

            def add(node: int, blank_end: bool, value: float, frames: tuple | None) -> None:
                entry = nxt.get(node)
                if entry is None:
                    nxt[node] = [value, NEG_INF, frames, value] if blank_end else [NEG_INF, value, frames, value]
                    return
                i = 0 if blank_end else 1
                entry[i] = _logaddexp(entry[i], value)
                if value > entry[3]:  # keep the frames of the most probable way of reaching this prefix
                    entry[2], entry[3] = frames, value

            for node, (pb, pnb, frames, _, total) in self.beams.items():
                add(node, True, total + blank_t, frames)
                last = trie.token[node]
                for c, lpc in zip(ids_t, lp_t):
                    if c == blank_id:
                        continue
                    if c == last:
                        add(node, False, pnb + lpc, frames)  # repeat of the last token: same prefix
                        if pb != NEG_INF:  # blank in between: a new token
                            new = trie.child(node, c)
                            if fusion is not None:
                                fusion.add(new, node, c)
                            add(new, False, pb + lpc, (t, frames))
                    else:
                        new = trie.child(node, c)
                        if fusion is not None:
                            fusion.add(new, node, c)
                        add(new, False, total + lpc, (t, frames))
            for entry in nxt.values():
                entry.append(_logaddexp(entry[0], entry[1]))
            self.beams = dict(sorted(nxt.items(), key=self._rank, reverse=True)[: self.beam])
            self.frames_seen += 1

    def _rank(self, item: tuple[int, list]) -> float:
        """The key prefixes are pruned and ranked by: log P(prefix), plus its fused score with `fusion`."""
        node, entry = item
        return entry[4] if self.fusion is None else entry[4] + self.fusion.total(node)

    def advance_log_probs(self, log_probs: Tensor) -> None:
        """Feed log_probs [T, V] of the next frames, trying each frame's `beam` most likely tokens."""
        log_probs = log_probs.detach().cpu()
        top_lp, top_ids = log_probs.topk(min(self.beam, log_probs.size(-1)), dim=-1)
        self.advance(top_lp.tolist(), top_ids.tolist(), log_probs[:, self.blank_id].tolist())

    def ranked(self, nbest: int = 1) -> list[Hypothesis]:
        """The best `nbest` prefixes so far, best first; the first carries the list as `.nbest` when nbest > 1. With
        `fusion`, each is ranked as if the output ended there (the scorers' final scores added: a word LM's last
        word)."""
        ends = self.fusion.end(list(self.beams)) if self.fusion is not None else {}
        entries = sorted(self.beams.items(), key=lambda item: self._rank(item) + ends.get(item[0], 0.0),
                         reverse=True)[: max(nbest, 1)]
        alts = [Hypothesis(self.trie.tokens(node), self._rank((node, e)) + ends.get(node, 0.0), _unlink(e[2]))
                for node, e in entries]
        if self.fusion is not None:
            for alt, (node, e) in zip(alts, entries):
                alt.scores = {"ctc": e[4], **self.fusion.parts(node)}
        best = Hypothesis(alts[0].tokens, alts[0].score, alts[0].token_frames, nbest=alts if nbest > 1 else [],
                          scores=alts[0].scores)
        return [best] + alts[1:]


def ctc_prefix_beam_search(
    log_probs: Tensor, lengths: Tensor, beam_size: int = 8, nbest: int = 1, blank_id: int = SPECIAL_IDS.blank,
    scorers: Sequence[WeightedScorer] = (), length_bonus: float = 0.0, prompt: Sequence[int] = (),
    memory: Tensor | None = None, memory_lens: Tensor | None = None,
) -> list[Hypothesis]:
    """CTC prefix beam search: keeps `beam_size` label prefixes, merging all alignments of the same prefix.

    Per frame only the `beam_size` most likely tokens are tried. Score = log of the total probability of the
    prefix's surviving alignments (the exact CTC log-likelihood when the beam is wide enough), plus, per label,
    the weighted extra `scorers` (which read `prompt` first and get the encoder output `memory` [B, T, D]) and the
    length bonus. The best hypothesis carries the top `nbest` in `.nbest`.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    fused = bool(active(scorers)) or length_bonus != 0
    hyps = []
    for b, n in enumerate(lengths.tolist()):
        fusion = None
        if fused:
            mem = None if memory is None else memory[b : b + 1, : int(memory_lens[b])]
            lens = None if memory is None else memory_lens[b : b + 1]
            fusion = PrefixFusion(scorers, log_probs.size(-1), 0, length_bonus, prompt, mem, lens)
        search = PrefixBeamSearch(beam_size, blank_id, fusion)
        search.advance_log_probs(log_probs[b, :n])
        hyps.append(search.ranked(nbest)[0])
    return hyps


def ctc_forced_align(log_probs: Tensor, tokens: list[int], blank_id: int = SPECIAL_IDS.blank) -> tuple[list[tuple[int, int]], float]:
    """Viterbi alignment of `tokens` to log_probs [T, V]: the single most probable CTC path that spells them.

    Returns ([(first frame, last frame)] of each token's run, the path's log-probability). Used as the reference
    timing for latency measurements. Raises ValueError when the frames are too few for the tokens.
    """
    T, U = log_probs.size(0), len(tokens)
    ext = torch.full((2 * U + 1,), blank_id, dtype=torch.long)  # blank, t1, blank, t2, ..., blank
    if U:
        ext[1::2] = torch.tensor(tokens)
    S = ext.numel()
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    if T < U + repeats:
        raise ValueError(f"{T} frames cannot hold {U} tokens ({repeats} repeats need a blank between)")
    lp = log_probs.detach().float().cpu()[:, ext]  # [T, S]
    # a state may come from itself, the previous state, or skip a blank between two different tokens
    skip = torch.zeros(S, dtype=torch.bool)
    skip[2:] = (ext[2:] != blank_id) & (ext[2:] != ext[:-2])
    score = torch.full((S,), NEG_INF)
    score[0] = lp[0, 0]
    if S > 1:
        score[1] = lp[0, 1]
    back = torch.zeros(T, S, dtype=torch.long)  # 0 = stay, 1 = from s-1, 2 = from s-2
    for t in range(1, T):
        prev1 = torch.cat((torch.tensor([NEG_INF]), score[:-1]))
        prev2 = torch.cat((torch.tensor([NEG_INF, NEG_INF]), score[:-2])).masked_fill(~skip, NEG_INF)
        cand = torch.stack((score, prev1, prev2))  # [3, S]
        best, back[t] = cand.max(dim=0)
        score = best + lp[t]
    end = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    total = float(score[end])
    states = [end]
    for t in range(T - 1, 0, -1):
        states.append(states[-1] - int(back[t, states[-1]]))
    states.reverse()
    spans: list[list[int]] = [[-1, -1] for _ in range(U)]
    for t, s in enumerate(states):
        if s % 2 == 1:
            span = spans[s // 2]
            span[0] = t if span[0] < 0 else span[0]
            span[1] = t
    return [(a, b) for a, b in spans], total
