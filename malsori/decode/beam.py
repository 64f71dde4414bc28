"""Batched beam search over weighted scorers (attention decoder, CTC prefix scorer, language models, ...).

Score of a hypothesis y = y_1..y_n (sos not counted, ended by eos):

    score(y) = Σ_s w_s · Σ_{i=1..n+1} log p_s(y_i | y_<i)  +  length_bonus · n,      y_{n+1} = eos

so every scorer also pays for eos, and the length bonus is paid per token but not for eos. For the CTC prefix
scorer the per-step scores telescope to log p_ctc(y | x). `Hypothesis.score` is always this raw sum; with
`normalize_length` hypotheses are *ranked* by score / (n + 1) instead (the +1 counts eos).

Each step advances all B utterances × beam hypotheses together: the weighted full scorers score every token,
the best `pre_beam` of them (+ eos, always) become candidates, the partial scorers score those candidates, and
the best `beam` expansions of each utterance survive. Expansions ending in eos leave the beam for the utterance's
list of ended hypotheses. An utterance stops when no running hypothesis can still beat its nbest-th ended one
(log-probs are ≤ 0, so a running score can only grow by the length bonus and bonus scorers' `max_score`), when
nothing runs any more, or at its maximum length, where only eos is allowed. The stop is exact: it never drops a hypothesis that could still
win. Under `normalize_length` that bound is loose, so the search usually runs to the maximum length; a length
bonus is the cheaper way to stop favouring short outputs. Beam size 1 is greedy search.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.result import Hypothesis
from malsori.decode.scorers import PartialScorer, Scorer
from malsori.tokenizer import SPECIAL_IDS, SpecialIds


class BeamSearch:
    """Beam search over `scorers` (name → `Scorer` or `PartialScorer`, see `malsori.decode.scorers`) with `weights`.

    beam_size: hypotheses kept per utterance; pre_beam: candidate tokens per hypothesis the full scorers pass to
    the partial ones (default 1.5 × beam; eos is always added); ids: the tokenizer's special ids (sos starts, eos
    ends, blank is never emitted); max_len: the most tokens per output, else max_len_ratio × the memory length
    (≥ 1); length_bonus: added per token; normalize_length: rank by score per token; nbest: hypotheses returned in
    `.nbest`; prompt: token ids the scorers that read one see before the output. Each Hypothesis also carries
    `scores` (scorer name → its unweighted log-prob). Scorers with weight 0 are not run. With a negative weight
    the early stop is off (its bound needs w ≥ 0).
    """

    def __init__(self, scorers: dict[str, Scorer], weights: dict[str, float], beam_size: int = 8,
                 ids: SpecialIds = SPECIAL_IDS, pre_beam: int | None = None, max_len: int | None = None,
                 max_len_ratio: float = 1.0, length_bonus: float = 0.0, normalize_length: bool = False,
                 nbest: int = 1, prompt: Sequence[int] = ()) -> None:
        if beam_size < 1 or nbest < 1:
            raise ValueError(f"beam_size and nbest must be >= 1, got {beam_size} and {nbest}")
        if set(scorers) != set(weights):
            raise ValueError(f"scorers {sorted(scorers)} and weights {sorted(weights)} must name the same scorers")
        # partial scorers first: their states give token frames (CTC alignments) in preference to attention
        names = sorted((n for n in scorers if weights[n] != 0), key=lambda n: not isinstance(scorers[n], PartialScorer))
        if not names:
            raise ValueError("beam search needs at least one scorer with a non-zero weight")
        self.scorers = {n: scorers[n] for n in names}
        self.partial = [n for n in names if isinstance(scorers[n], PartialScorer)]
        self.weights = torch.tensor([float(weights[n]) for n in names])
        self.beam_size, self.sos, self.eos, self.blank = beam_size, ids.sos, ids.eos, ids.blank
        self.pre_beam = pre_beam if pre_beam is not None else int(1.5 * beam_size)
        self.max_len, self.max_len_ratio = max_len, max_len_ratio
        self.length_bonus, self.normalize_length, self.nbest = length_bonus, normalize_length, nbest
        self.prompt = tuple(prompt)

    @torch.no_grad()
    def __call__(self, memory: Tensor, memory_lens: Tensor) -> list[Hypothesis]:
        """memory [B, T, D], memory_lens [B] → the best Hypothesis per utterance, its `.nbest` holding the n best."""
        b, beam, device = memory.size(0), self.beam_size, memory.device
        n = b * beam
        mem, lens = memory.repeat_interleave(beam, 0), memory_lens.repeat_interleave(beam, 0)
        max_lens = self._max_lens(memory_lens).repeat_interleave(beam)
        states = {name: s.init_state(n, mem, lens, self.prompt) for name, s in self.scorers.items()}
        ys = torch.zeros((n, 0), dtype=torch.long, device=device)  # the output tokens (eos last once ended)
        frames = ys.new_zeros(n, 0)
        score = torch.zeros(n, device=device)
        score.view(b, beam)[:, 1:] = float("-inf")  # one live hypothesis per utterance to start with
        parts = torch.zeros(n, len(self.scorers), device=device)  # each scorer's own (unweighted) log-prob
        ended: list[list[Hypothesis]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        weights = self.weights.to(device)

        for step in range(int(max_lens.max()) + 1):
            cand, cand_parts, scored = self._expand(states, mem, lens, weights)  # [N, K], [N, K, S]
            k = cand.size(1)
            gain = (cand_parts * weights).sum(-1) + self.length_bonus * (cand != self.eos)
            at_max = (step >= max_lens)[:, None] & (cand != self.eos)
            gain = gain.masked_fill((cand == self.blank) | at_max, float("-inf"))
            top, flat = (score[:, None] + gain).view(b, beam * k).topk(beam, dim=1)
            src = (flat // k + torch.arange(b, device=device)[:, None] * beam).view(-1)
            col = (flat % k).view(-1)
            score, token = top.view(-1), cand[src, col]
            ys, parts = torch.cat((ys[src], token[:, None]), 1), parts[src] + cand_parts[src, col]
            states = {name: s.extend(scored[name], src, token) for name, s in self.scorers.items()}
            frames = torch.cat((frames[src], self._token_frames(states, lens)[:, None]), 1)

            finished = (token == self.eos) & (score > float("-inf"))
            for j in finished.nonzero().view(-1).tolist():
                ended[j // beam].append(self._hypothesis(ys[j, :-1], frames[j, :-1], score[j], parts[j]))
            score = score.masked_fill(token == self.eos, float("-inf"))
            done |= self._finished(ended, score.view(b, beam), step + 1, max_lens.view(b, beam)[:, 0])
            score.view(b, beam)[done] = float("-inf")
            if bool(done.all()):
                break

        results = []
        for hyps in ended:
            hyps = sorted(hyps, key=self._rank, reverse=True)[: self.nbest]
            best = hyps[0] if hyps else Hypothesis(tokens=[], score=float("-inf"), token_frames=[])
            best.nbest = hyps
            results.append(best)
        return results

    def _max_lens(self, memory_lens: Tensor) -> Tensor:
        """[B] the most tokens (eos excluded) each utterance may get."""
        if self.max_len is not None:
            return torch.full_like(memory_lens, self.max_len).long()
        return (memory_lens.float() * self.max_len_ratio).long().clamp(min=1)

    def _expand(self, states: dict, mem: Tensor, lens: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, dict]:
        """Score the candidates of every hypothesis → (candidates [N, K], per-scorer scores [N, K, S], scored states)."""
        full, scored = {}, {}
        for name, s in self.scorers.items():
            if name not in self.partial:
                full[name], scored[name] = s.score(states[name], mem, lens)
        n = mem.size(0)
        if full and self.partial:  # pre-beam: the best tokens of the weighted full scorers, eos added always
            pre = sum(weights[i] * full[name] for i, name in enumerate(self.scorers) if name in full)
            pre[:, [self.eos, self.blank]] = float("-inf")
            vocab = pre.size(1)
            best = pre.topk(min(self.pre_beam, vocab), dim=1)
            top = best.indices.masked_fill(best.values == float("-inf"), self.blank)  # blank: dropped later
            cand = torch.cat((top, top.new_full((n, 1), self.eos)), 1)
        else:  # one kind of scorer only: every token is a candidate
            vocab = next(iter(full.values())).size(1) if full else self.scorers[self.partial[0]].vocab_size
            cand = torch.arange(vocab, device=mem.device).expand(n, vocab)
        parts = []
        for name, s in self.scorers.items():
            if name in full:
                parts.append(full[name].gather(1, cand))
            else:
                scores, scored[name] = s.score(states[name], mem, lens, cand)
                parts.append(scores)
        return cand, torch.stack(parts, -1), scored

    def _token_frames(self, states: dict, lens: Tensor) -> Tensor:
        """[N] the encoder frame of each hypothesis' newest token: from the first scorer that knows, else the last."""
        for name, s in self.scorers.items():
            frame = s.token_frame(states[name])
            if frame is not None:
                return frame.long()
        return (lens - 1).clamp(min=0).long()

    def _finished(self, ended: list[list[Hypothesis]], score: Tensor, length: int, max_lens: Tensor) -> Tensor:
        """[B] True where no running hypothesis (scores [B, beam], `length` tokens) can enter the n best any more."""
        bonuses = sum(max(float(w) * s.max_score, 0.0) for w, s in zip(self.weights, self.scorers.values()))
        step = self.length_bonus + bonuses
        gain = max(step, 0.0) * (max_lens - length).clamp(min=0)[:, None]
        bound = score + gain
        if self.normalize_length:  # (score + future) / (tokens + 1) grows with the tokens added: bound at max_len
            bound = bound / (max_lens[:, None] + 1)
        if bool((self.weights < 0).any()):
            bound = bound.masked_fill(bound > float("-inf"), float("inf"))
        worst = [sorted(map(self._rank, h), reverse=True)[self.nbest - 1] if len(h) >= self.nbest else -math.inf
                 for h in ended]
        return bound.max(1).values <= torch.tensor(worst, device=score.device)

    def _hypothesis(self, tokens: Tensor, frames: Tensor, score: Tensor, parts: Tensor) -> Hypothesis:
        hyp = Hypothesis(tokens=tokens.tolist(), score=float(score), token_frames=frames.tolist())
        hyp.scores = dict(zip(self.scorers, parts.tolist()))
        return hyp

    def _rank(self, hyp: Hypothesis) -> float:
        """The key the final choice maximizes: the score, or the score per token (eos included)."""
        return hyp.score / (len(hyp.tokens) + 1) if self.normalize_length else hyp.score
