"""Internal LM estimation (ILME; Meng et al., 2021): a transducer's or an attention decoder's output already holds a
language model learned from the training transcripts; fusing an external LM counts that prior twice. ILME
subtracts a weighted estimate of it:  score = acoustic + λ · log p_LM − μ · log p_ILM  (+ bonuses), per label.

The estimate is the label-side network with the audio taken away:
- transducer: the prediction network and joiner with the encoder's contribution zeroed, joiner(0, pred), the
  distribution renormalized over the labels (blank left out);
- attention decoder: the decoder over an all-zero memory of one frame ("zero encoder", Zeineldeen et al., 2021):
  for LAS decoders the context vector is then exactly zero; for the Transformer decoder cross-attention returns
  only its biases, the same constant for every prefix.

`with_ilm` turns `DecodeOptions.ilm_weight` μ into one more extra scorer, "ilm", of weight −μ, so every search
that takes extra scorers runs it and `Hypothesis.scores["ilm"]` holds log p_ILM of the output. μ = 0 adds nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import DecoderScorer, Scorer, State, WeightedScorer, select_state
from malsori.tokenizer import SPECIAL_IDS


def with_ilm(options: DecodeOptions, internal_lm: Callable[[], Scorer]) -> DecodeOptions:
    """`options` with μ = `ilm_weight` made a scorer: "ilm" = internal_lm() of weight −μ appended to `scorers`
    (`ilm_weight` then 0); unchanged when μ = 0."""
    if options.ilm_weight == 0:
        return options
    ilm = WeightedScorer("ilm", internal_lm(), -options.ilm_weight)
    return dataclasses.replace(options, scorers=options.scorers + (ilm,), ilm_weight=0.0)


class TransducerILMScorer(Scorer):
    """log p_ILM(label | prefix) = log_softmax over the labels of joiner.out(tanh(pred_proj(predictor(prefix)))).

    State: "pred" [N, J] the projected predictor output, "state" the predictor's state (rows first)."""

    def __init__(self, predictor: Any, joiner: Any, blank: int = SPECIAL_IDS.blank) -> None:
        self.predictor, self.joiner, self.blank = predictor, joiner, blank

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        device = self.joiner.out.weight.device
        state = {"pred": None, "state": self.predictor.init_state(n)}
        for token in (self.blank, *prompt):  # blank is the prediction network's start symbol
            state = self._step(state, torch.full((n,), int(token), dtype=torch.long, device=device))
        return state

    @torch.no_grad()
    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        logits = self.joiner.out(torch.tanh(state["pred"])).float()
        logits[:, self.blank] = float("-inf")
        log_probs = logits.log_softmax(-1)
        return (log_probs if candidates is None else log_probs.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        return self._step(select_state(state, index), tokens)

    @torch.no_grad()
    def _step(self, state: State, tokens: Tensor) -> State:
        out, pred_state = self.predictor.step(tokens, state["state"])
        return {"pred": self.joiner.pred_proj(out), "state": pred_state}


class DecoderILMScorer(DecoderScorer):
    """The attention decoder over an all-zero memory [N, 1, memory_dim] (whatever memory a search passes)."""

    def __init__(self, decoder: Any, memory_dim: int, sos: int = SPECIAL_IDS.sos) -> None:
        super().__init__(decoder, sos)
        self.memory_dim = memory_dim

    def _zeros(self, n: int) -> tuple[Tensor, Tensor]:
        weight = next(self.decoder.parameters())
        return (torch.zeros(n, 1, self.memory_dim, device=weight.device, dtype=weight.dtype),
                torch.ones(n, dtype=torch.long, device=weight.device))

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        return super().init_state(n, *self._zeros(n), prompt)

    @torch.no_grad()
    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        return super().score(state, *self._zeros(state["ys"].size(0)), candidates)

    def token_frame(self, state: State) -> Tensor | None:
        return None  # it never sees the audio
