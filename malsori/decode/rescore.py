"""Re-ranking a search's n-best: attention rescoring (the attention decoder over a CTC search's n-best, two-pass
decoding) and LM rescoring (`DecodeOptions.rescorers`: any scorers, a word n-gram or a neural LM, over any beam
method's n-best); attention rescoring's output can go through LM rescoring.

Attention rescoring:

Each candidate y gets  score = (1 − ctc_weight) · log p_att(y, eos | x) + ctc_weight · ctc_score,  where
log p_att is the decoder's teacher-forced log-probability of y followed by eos, and ctc_score is the candidate's
own `score` from the first pass (CTC prefix beam search: log p_ctc(y | x)). All candidates of all utterances go
through the decoder in one batch (put it in eval mode first: dropout would make the scores random).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from malsori.decode.fusion import active
from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import Scorer, WeightedScorer
from malsori.tokenizer import SPECIAL_IDS, SpecialIds


@torch.no_grad()
def attention_rescore(decoder: Any, memory: Tensor, memory_lens: Tensor, nbest: list[list[Hypothesis]],
                      ctc_weight: float, ids: SpecialIds = SPECIAL_IDS) -> list[Hypothesis]:
    """memory [B, T, D], one candidate list per utterance → the best per utterance, `.nbest` re-ranked.

    The new hypotheses keep tokens, frames and text; `scores` holds {"att": ..., "ctc": ...} of each.
    """
    flat = [hyp for hyps in nbest for hyp in hyps]
    att = _attention_logprobs(decoder, memory, memory_lens, nbest, ids.sos, ids.eos).tolist() if flat else []
    rescored = [_rescored(hyp, a, (1.0 - ctc_weight) * a + ctc_weight * hyp.score) for hyp, a in zip(flat, att)]
    results, start = [], 0
    for hyps in nbest:
        ranked = sorted(rescored[start : start + len(hyps)], key=lambda h: h.score, reverse=True)
        start += len(hyps)
        best = ranked[0] if ranked else Hypothesis(tokens=[], score=float("-inf"), token_frames=[])
        best.nbest = ranked
        results.append(best)
    return results


def _attention_logprobs(decoder: Any, memory: Tensor, memory_lens: Tensor, nbest: list[list[Hypothesis]],
                        sos: int, eos: int) -> Tensor:
    """[M] teacher-forced log p_att(tokens, eos) of every candidate, in the order of the flattened lists."""
    device = memory.device
    flat = [hyp for hyps in nbest for hyp in hyps]
    utt = torch.tensor([b for b, hyps in enumerate(nbest) for _ in hyps], device=device)
    lens = torch.tensor([len(h.tokens) + 1 for h in flat], device=device)  # + sos in, + eos out
    ys_in = torch.zeros(len(flat), int(lens.max()), dtype=torch.long, device=device)
    target = torch.zeros_like(ys_in)
    for i, hyp in enumerate(flat):
        tokens = torch.as_tensor(hyp.tokens, dtype=torch.long, device=device)
        ys_in[i, 0], ys_in[i, 1 : len(tokens) + 1] = sos, tokens
        target[i, : len(tokens)], target[i, len(tokens)] = tokens, eos
    log_probs = decoder(memory[utt], memory_lens[utt], ys_in, lens).float().log_softmax(-1)
    picked = log_probs.gather(2, target[..., None]).squeeze(-1)
    mask = torch.arange(ys_in.size(1), device=device)[None, :] < lens[:, None]
    return picked.masked_fill(~mask, 0.0).sum(1)


def _rescored(hyp: Hypothesis, att: float, score: float) -> Hypothesis:
    new = Hypothesis(tokens=list(hyp.tokens), score=score, token_frames=list(hyp.token_frames), text=hyp.text)
    new.scores = {"att": att, "ctc": hyp.score}
    return new


@torch.no_grad()
def lm_rescore(nbest: list[list[Hypothesis]], scorers: Sequence[WeightedScorer],
               eos: int = SPECIAL_IDS.eos) -> list[Hypothesis]:
    """One candidate list per utterance → the best per utterance, `.nbest` re-ranked by
    score = the search's score + Σ_s w_s · log p_s(tokens, eos), each scorer reading the tokens then eos (all
    candidates in one batch); `scores` gain each scorer's own log-probability. Weight-0 scorers are not run."""
    flat = [hyp for hyps in nbest for hyp in hyps]
    kept = active(scorers)
    parts = {s.name: sequence_logprobs(s.scorer, [h.tokens for h in flat], eos).tolist() for s in kept} if flat else {}
    results, start = [], 0
    for hyps in nbest:
        ranked = []
        for j, hyp in enumerate(hyps, start):
            extra = {s.name: parts[s.name][j] for s in kept}
            new = Hypothesis(tokens=list(hyp.tokens), score=hyp.score + sum(s.weight * extra[s.name] for s in kept),
                             token_frames=list(hyp.token_frames), text=hyp.text, scores={**hyp.scores, **extra})
            ranked.append(new)
        start += len(hyps)
        ranked.sort(key=lambda h: h.score, reverse=True)
        best = ranked[0] if ranked else Hypothesis(tokens=[], score=float("-inf"), token_frames=[])
        best.nbest = ranked
        results.append(best)
    return results


def sequence_logprobs(scorer: Scorer, sequences: list[list[int]], eos: int = SPECIAL_IDS.eos) -> Tensor:
    """[M] Σ_i log p(y_i | y_<i) + log p(eos | y) of each token sequence under `scorer`, teacher-forced in one batch
    (step by step through the scorer protocol, or in one pass where the scorer has its own `sequence_logprobs`)."""
    own = getattr(scorer, "sequence_logprobs", None)
    total = own(sequences, eos) if own is not None else None
    if total is not None:
        return total
    n = len(sequences)
    longest = max((len(y) for y in sequences), default=0)
    tokens = torch.full((n, longest + 1), eos, dtype=torch.long)
    for i, y in enumerate(sequences):
        tokens[i, : len(y)] = torch.as_tensor(y, dtype=torch.long)
    lens = torch.tensor([len(y) for y in sequences])
    rows, total = torch.arange(n), torch.zeros(n, dtype=torch.float64)
    state = scorer.init_state(n)
    for t in range(longest + 1):
        scores, state = scorer.score(state)
        picked = scores.double().cpu().gather(1, tokens[:, t : t + 1]).squeeze(1)
        total += torch.where(t <= lens, picked, 0.0)
        if t < longest:
            state = scorer.extend(state, rows.to(tokens.device), tokens[:, t])
    return total


def rescore_with_options(hyps: list[Hypothesis], options: DecodeOptions) -> list[Hypothesis]:
    """A beam method's results (n-best of `options.search_nbest`) → LM-rescored by `options.rescorers`, `.nbest`
    cut to `options.nbest`; unchanged when there are none."""
    if not active(options.rescorers):
        return hyps
    hyps = lm_rescore([h.nbest or [h] for h in hyps], options.rescorers)
    for hyp in hyps:
        hyp.nbest = hyp.nbest[: options.nbest]
    return hyps
