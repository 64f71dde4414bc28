"""Searches for transducer models: greedy (batched), Graves-style beam search and modified beam search (≤ 1 label
per frame, as in k2/icefall). All take encoder output [B, T, D] + lengths and return one Hypothesis per utterance,
with `token_frames` = the encoder frame at which each label was emitted.

Scores are natural-log probabilities under each search's lattice:
- greedy: the log-prob of the chosen path: every label and every blank taken; a frame ends with a blank or with its
  `max_symbols_per_frame`-th label (then nothing more is paid for that frame).
- beam: Σ over the alignments that survived the beam of their probability (standard RNN-T lattice, at most
  `max_symbols_per_frame` labels per frame), merged per label sequence; unpruned, it is log P(y | x) = -rnnt_loss.
- modified_beam: each frame takes exactly one step, a blank or one label; hypotheses with equal labels are merged
  by log-add, so the score sums those paths.
For merged hypotheses, `token_frames` come from the most probable of the merged paths. `.nbest` holds the n best.
The beam searches add, per label, the weighted extra scorers and a length bonus (`PrefixFusion`, keyed by the
label sequence); they rank by that total, which `Hypothesis.score` then is, with `scores` holding "transducer"
(the lattice score above) and each extra scorer's part. A `prompt` is fed to the prediction network (and the extra
scorers) after the start symbol: it conditions the labels but is not output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.fusion import PrefixFusion, active
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import WeightedScorer, select_state


@dataclass
class _Hyp:
    """Bookkeeping of one search hypothesis; `row` indexes its predictor state / output in the batched tensors."""

    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    score: float  # log-sum over merged paths
    best: float  # log-prob of the most probable merged path (its frames are kept)
    row: int


def _merge(into: dict[tuple[int, ...], _Hyp], h: _Hyp) -> None:
    """Add `h` to `into`, log-adding its score to a hypothesis with the same labels."""
    old = into.get(h.tokens)
    if old is None:
        into[h.tokens] = h
        return
    hi, lo = max(old.score, h.score), min(old.score, h.score)
    score = hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))
    keep = h if h.best > old.best else old
    into[h.tokens] = _Hyp(keep.tokens, keep.frames, score, max(h.best, old.best), keep.row)


def _where(mask: Tensor, new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Row-wise choice between two predictor states (or outputs): `new` where mask [N] is True."""
    return tuple(torch.where(mask.view(-1, *[1] * (n.dim() - 1)), n, o) for n, o in zip(new, old))


def _start(model, n: int, device: torch.device, prompt: Sequence[int] = ()) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Projected predictor output and state after the start symbol (blank) and the prompt, for n rows."""
    blank = model.special_ids.blank
    out, state = model.predictor.step(torch.full((n,), blank, dtype=torch.long, device=device), model.predictor.init_state(n))
    for token in prompt:
        out, state = model.predictor.step(torch.full((n,), int(token), dtype=torch.long, device=device), state)
    return model.joiner.pred_proj(out), state


def _advance(model, labels: Tensor, pred_p: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Feed labels [N] to the predictor where they are not blank; rows with blank keep their output and state."""
    emit = labels != model.special_ids.blank
    if not bool(emit.any()):
        return pred_p, state
    out, new_state = model.predictor.step(labels, state)
    return _where(emit, (model.joiner.pred_proj(out),), (pred_p,))[0], _where(emit, new_state, state)


def _fused(fusion: PrefixFusion | None, h: _Hyp) -> float:
    """The score a hypothesis is ranked by: its lattice score, plus its labels' fused score."""
    return h.score if fusion is None else h.score + fusion.total(h.tokens)


def _finish(hyps: list[_Hyp], fusion: PrefixFusion | None = None) -> Hypothesis:
    """Best-first Hypothesis objects, ranked as if the output ended there (with `fusion`, its final scores added);
    the best one carries the list as `.nbest`."""
    out = []
    ends = fusion.end([h.tokens for h in hyps]) if fusion is not None else {}
    for h in sorted(hyps, key=lambda h: -(_fused(fusion, h) + ends.get(h.tokens, 0.0))):
        hyp = Hypothesis(tokens=list(h.tokens), score=_fused(fusion, h) + ends.get(h.tokens, 0.0),
                         token_frames=list(h.frames))
        if fusion is not None:
            hyp.scores = {"transducer": h.score, **fusion.parts(h.tokens)}
        out.append(hyp)
    best = out[0]
    best.nbest = out
    return best


def _fusion(scorers: Sequence[WeightedScorer], length_bonus: float, vocab_size: int, prompt: Sequence[int],
            memory: Tensor | None) -> PrefixFusion | None:
    """The extra scorers of one utterance (memory [1, T, D] or None), or None when there is nothing to add."""
    if not active(scorers) and length_bonus == 0:
        return None
    lens = None if memory is None else torch.tensor([memory.size(1)], device=memory.device)
    return PrefixFusion(scorers, vocab_size, (), length_bonus, prompt, memory, lens)


def _gains(fusion: PrefixFusion, hyps: list[_Hyp], blank: int, device: torch.device) -> Tensor:
    """[K, V] what each step adds to each hypothesis' rank: its fused total, plus the label's gain (none for blank)."""
    fusion.prepare([h.tokens for h in hyps])
    gains = torch.tensor([fusion.gain(h.tokens) for h in hyps], dtype=torch.float64, device=device)
    gains[:, blank] = 0.0
    return gains + torch.tensor([fusion.total(h.tokens) for h in hyps], dtype=torch.float64, device=device)[:, None]


class GreedySearch:
    """Greedy transducer search over a batch, fed encoder frames in pieces (`advance`), readable at any time."""

    def __init__(self, model, batch: int, device: torch.device, max_symbols_per_frame: int = 3,
                 prompt: Sequence[int] = ()) -> None:
        self.model, self.max_symbols, self.blank = model, max_symbols_per_frame, model.special_ids.blank
        self.pred_p, self.state = _start(model, batch, device, prompt)
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.frames: list[list[int]] = [[] for _ in range(batch)]
        self.score = torch.zeros(batch, dtype=torch.float64, device=device)
        self.frames_seen = 0

    @torch.no_grad()
    def advance(self, enc: Tensor, enc_lens: Tensor | None = None) -> None:
        """enc [B, T, D] = the next T encoder frames (rows past their `enc_lens` are skipped)."""
        model, blank = self.model, self.blank
        enc_p = model.joiner.enc_proj(enc)
        lens = torch.full((enc.size(0),), enc.size(1), device=enc.device) if enc_lens is None else enc_lens
        for i in range(enc.size(1)):
            t = self.frames_seen + i
            deciding = i < lens  # rows still deciding at this frame
            for _ in range(self.max_symbols):
                if not bool(deciding.any()):
                    break
                best_lp, best = model.joiner(enc_p[:, i], self.pred_p).log_softmax(-1).max(-1)
                self.score += torch.where(deciding, best_lp, 0).double()
                labels = torch.where(deciding, best, blank)
                for b in (labels != blank).nonzero()[:, 0].tolist():
                    self.tokens[b].append(int(labels[b]))
                    self.frames[b].append(t)
                self.pred_p, self.state = _advance(model, labels, self.pred_p, self.state)
                deciding = labels != blank
        self.frames_seen += enc.size(1)

    def results(self) -> list[Hypothesis]:
        """One hypothesis per row: the labels chosen so far."""
        return [
            _finish([_Hyp(tuple(tok), tuple(fr), float(sc), float(sc), 0)])
            for tok, fr, sc in zip(self.tokens, self.frames, self.score.tolist())
        ]


@torch.no_grad()
def transducer_greedy(model, enc: Tensor, enc_lens: Tensor, max_symbols_per_frame: int = 3,
                      prompt: Sequence[int] = ()) -> list[Hypothesis]:
    """Most probable symbol at every step, all utterances at once; at most `max_symbols_per_frame` labels a frame."""
    search = GreedySearch(model, enc.size(0), enc.device, max_symbols_per_frame, prompt)
    search.advance(enc, enc_lens)
    return search.results()


class ModifiedBeamSearch:
    """Modified beam search over one utterance, fed encoder frames in pieces (`advance`), readable at any time.

    Each frame, every hypothesis takes one step (blank or one label); the best `beam_size` of all K·V steps are
    kept, equal label sequences merged. Batched over hypotheses. `fusion` (keys: label tuples, root ()) adds extra
    scorers and the length bonus per label.
    """

    def __init__(self, model, beam_size: int, device: torch.device, fusion: PrefixFusion | None = None,
                 prompt: Sequence[int] = ()) -> None:
        self.model, self.beam_size, self.device, self.fusion = model, beam_size, device, fusion
        self.pred_p, self.state = _start(model, 1, device, prompt)
        self.hyps = [_Hyp((), (), 0.0, 0.0, 0)]
        self.frames_seen = 0

    @torch.no_grad()
    def advance(self, enc: Tensor) -> None:
        """enc [T, D] = the next T encoder frames of this utterance."""
        model, hyps, device, fusion, blank = self.model, self.hyps, self.device, self.fusion, self.model.special_ids.blank
        enc_p = model.joiner.enc_proj(enc)
        for i in range(enc.size(0)):
            t = self.frames_seen + i
            logp = model.joiner(enc_p[i][None], self.pred_p).log_softmax(-1).double()  # [K, V]
            V = logp.size(1)
            cand = torch.tensor([h.score for h in hyps], dtype=torch.float64, device=device)[:, None] + logp
            best = torch.tensor([h.best for h in hyps], dtype=torch.float64, device=device)[:, None] + logp
            if fusion is None:
                top_s, top_i = cand.flatten().topk(min(self.beam_size, cand.numel()))
            else:  # rank by the fused score, keep the lattice score
                top_i = (cand + _gains(fusion, hyps, blank, device)).flatten().topk(min(self.beam_size, cand.numel()))[1]
                top_s = cand.flatten()[top_i]
            top_best = best.flatten()[top_i].tolist()
            merged: dict[tuple[int, ...], _Hyp] = {}
            steps: list[tuple[int, int]] = []  # (parent row, label) of each new row
            for sc, bs, j in zip(top_s.tolist(), top_best, top_i.tolist()):
                k, v = divmod(j, V)
                h = hyps[k]
                toks, frs = (h.tokens, h.frames) if v == blank else (h.tokens + (v,), h.frames + (t,))
                if fusion is not None and v != blank:
                    fusion.add(toks, h.tokens, v)
                _merge(merged, _Hyp(toks, frs, sc, bs, len(steps)))
                steps.append((k, v))
            hyps = list(merged.values())
            parents = torch.tensor([steps[h.row][0] for h in hyps], device=device)
            labels = torch.tensor([steps[h.row][1] for h in hyps], device=device)
            self.pred_p, self.state = _advance(model, labels, self.pred_p[parents], select_state(self.state, parents))
            hyps = [_Hyp(h.tokens, h.frames, h.score, h.best, j) for j, h in enumerate(hyps)]
        self.hyps = hyps
        self.frames_seen += enc.size(0)

    def result(self) -> Hypothesis:
        """The best hypothesis so far, carrying the beam as `.nbest`."""
        return _finish(self.hyps, self.fusion)


@torch.no_grad()
def modified_beam_search(model, enc: Tensor, enc_lens: Tensor, beam_size: int = 4,
                         scorers: Sequence[WeightedScorer] = (), length_bonus: float = 0.0,
                         prompt: Sequence[int] = ()) -> list[Hypothesis]:
    """`ModifiedBeamSearch` over each utterance of a batch (extra scorers get the utterance's encoder output)."""
    results = []
    for b in range(enc.size(0)):
        n = int(enc_lens[b])
        fusion = _fusion(scorers, length_bonus, model.vocab_size, prompt, enc[b : b + 1, :n])
        search = ModifiedBeamSearch(model, beam_size, enc.device, fusion, prompt)
        search.advance(enc[b, :n])
        results.append(search.result())
    return results


@torch.no_grad()
def transducer_beam_search(model, enc: Tensor, enc_lens: Tensor, beam_size: int = 4, max_symbols_per_frame: int = 3,
                           scorers: Sequence[WeightedScorer] = (), length_bonus: float = 0.0,
                           prompt: Sequence[int] = ()) -> list[Hypothesis]:
    """Graves (2012)-style beam search, simplified as in ESPnet: within a frame, hypotheses that emit blank join the
    frame's ended set (merged by log-add); the best `beam_size` label expansions that still beat the `beam_size`-th
    ended hypothesis are expanded again, at most `max_symbols_per_frame` times. The best ended ones form the next beam."""
    enc_p = model.joiner.enc_proj(enc)
    blank = model.special_ids.blank
    results = []
    for b in range(enc.size(0)):
        fusion = _fusion(scorers, length_bonus, model.vocab_size, prompt, enc[b : b + 1, : int(enc_lens[b])])
        pred_p, state = _start(model, 1, enc.device, prompt)
        beam = [_Hyp((), (), 0.0, 0.0, 0)]
        for t in range(int(enc_lens[b])):
            ended: dict[tuple[int, ...], _Hyp] = {}
            ended_rows: list[tuple[Tensor, tuple[Tensor, ...], int]] = []  # (predictor outputs, states, row) per entry
            active_hyps, a_pred, a_state = beam, pred_p, state
            for s in range(max_symbols_per_frame + 1):
                logp = model.joiner(enc_p[b, t][None], a_pred).log_softmax(-1).double()  # [K, V]
                blank_lp = logp[:, blank].tolist()
                for k, h in enumerate(active_hyps):
                    lp = blank_lp[k]
                    _merge(ended, _Hyp(h.tokens, h.frames, h.score + lp, h.best + lp, len(ended_rows)))
                    ended_rows.append((a_pred, a_state, k))
                if s == max_symbols_per_frame:
                    break
                scores = torch.tensor([h.score for h in active_hyps], dtype=torch.float64, device=enc.device)[:, None] + logp
                scores[:, blank] = -math.inf
                if fusion is None:
                    top_r, top_i = scores.flatten().topk(min(beam_size, scores.numel()))
                    top_s = top_r
                else:  # rank by the fused score, keep the lattice score
                    ranks = scores + _gains(fusion, active_hyps, blank, enc.device)
                    top_r, top_i = ranks.flatten().topk(min(beam_size, scores.numel()))
                    top_s = scores.flatten()[top_i]
                ranked = sorted((_fused(fusion, h) for h in ended.values()), reverse=True)
                floor = ranked[beam_size - 1] if len(ranked) >= beam_size else -math.inf
                keep = [(float(sc), i) for r, sc, i in zip(top_r.tolist(), top_s.tolist(), top_i.tolist()) if r > floor]
                if not keep:
                    break
                V = logp.size(1)
                parents = torch.tensor([i // V for _, i in keep], device=enc.device)
                labels = torch.tensor([i % V for _, i in keep], device=enc.device)
                label_lp = logp.flatten()[torch.tensor([i for _, i in keep], device=logp.device)].tolist()
                new = []
                for r, ((sc, i), lp) in enumerate(zip(keep, label_lp)):
                    h, v = active_hyps[i // V], i % V
                    if fusion is not None:
                        fusion.add(h.tokens + (v,), h.tokens, v)
                    new.append(_Hyp(h.tokens + (v,), h.frames + (t,), sc, h.best + lp, r))
                active_hyps = new
                a_pred, a_state = _advance(model, labels, a_pred[parents], select_state(a_state, parents))
            beam = sorted(ended.values(), key=lambda h: -_fused(fusion, h))[:beam_size]
            rows = [ended_rows[h.row] for h in beam]
            pred_p = torch.stack([p[k] for p, _, k in rows])
            state = tuple(torch.stack(parts) for parts in zip(*([x[k] for x in st] for _, st, k in rows)))
            beam = [_Hyp(h.tokens, h.frames, h.score, h.best, i) for i, h in enumerate(beam)]
        results.append(_finish(beam, fusion))
    return results
