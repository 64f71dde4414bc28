"""Attention rescoring: re-rank the n-best of a CTC search with the attention decoder (two-pass decoding).

Each candidate y gets  score = (1 − ctc_weight) · log p_att(y, eos | x) + ctc_weight · ctc_score,  where
log p_att is the decoder's teacher-forced log-probability of y followed by eos, and ctc_score is the candidate's
own `score` from the first pass (CTC prefix beam search: log p_ctc(y | x)). All candidates of all utterances go
through the decoder in one batch (put it in eval mode first: dropout would make the scores random).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from malsori.decode.result import Hypothesis
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
