"""Scorers: the one stateful protocol through which every search asks "how likely is this label next?".

A scorer works on N prefixes (hypotheses) at once. Its state is a dict / tuple / list of tensors whose first
dimension is the prefix, so a search reorders and duplicates prefixes with `select_state(state, index)`.

- `init_state(n, memory, memory_lens, prompt)`: n prefixes that hold only the start (sos, then the `prompt` for a
  scorer that reads one); memory [n, T, D] is the encoder output, None where there is none to give (streaming).
- `score(state, memory, memory_lens, candidates=None) -> (log_probs, state)`: log p(next label | prefix) of every
  token [N, V], or of candidates [N, K] only; the returned state (which may keep what scoring computed) is the one
  to `extend` or `select_state` from. Scoring a state twice gives the same scores.
- `extend(state, index, tokens)`: the prefixes index[m] (rows of a state `score` returned), each extended by
  tokens[m] → a state of M rows, ready to be scored.
- `select_state(state, index)`: rows `index` of a state, prefixes unchanged.
- `token_frame(state)`: the encoder frame [N] of each prefix's newest label if the scorer knows it, else None.
- `final_score(state)`: what ending the output after each prefix adds [N] (log p(eos | prefix) for an LM), for the
  frame-synchronous searches, which have no eos; None (the default): nothing. A word LM scores its last word here.

A `PartialScorer` can only score the candidates it is given (the CTC prefix scorer: each token costs a pass over
time); the label-synchronous beam search picks them with its full scorers. Scores are natural-log probabilities,
so ≤ 0 (the attention beam search's exact early stop relies on it; a scorer that is a bonus says its
`max_score`).
The label-synchronous searches (attention beam, greedy and MoChA streaming) score eos like any label, so a
scorer's scores summed over a finished hypothesis are its log p(y, eos); the frame-synchronous searches (CTC prefix
beam, transducer) have no eos and score labels only. A search weights each scorer; a scorer of weight 0 is not run.
Scorers that the frame-synchronous searches use see prefixes of different lengths in one batch (`stack_states`), so
their state's shape must not depend on the prefix length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from malsori.nn.state import State, select_state, stack_states
from malsori.tokenizer import SPECIAL_IDS

__all__ = ["CTCPrefixScorer", "DecoderScorer", "PartialScorer", "Scorer", "State", "WeightedScorer", "select_state",
           "stack_states"]


class Scorer(ABC):
    """A stateful label scorer (see the module docstring): init, score all tokens, extend, select rows."""

    max_score: float = 0.0  # the most one step can score: 0 for log-probabilities (a bonus scorer says more)

    @abstractmethod
    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        """The state of n prefixes that hold only the start (and `prompt`, if this scorer reads one)."""

    @abstractmethod
    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        """→ (log-probs of the next label [N, V], or of `candidates` [N, K]; the state to extend from)."""

    @abstractmethod
    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        """Prefixes index [M] of a scored state, each extended by tokens [M]."""

    def select_state(self, state: State, index: Tensor) -> State:
        """Rows `index` of a state, prefixes unchanged."""
        return select_state(state, index)

    def token_frame(self, state: State) -> Tensor | None:
        """The encoder frame [N] of each prefix's newest label, where this scorer knows it."""
        return None

    def final_score(self, state: State) -> Tensor | None:
        """What ending after each prefix of a state adds [N], for searches without eos; None: nothing."""
        return None


class PartialScorer(Scorer):
    """A scorer too costly to score every token: `score` needs the candidates [N, K]."""

    vocab_size: int  # every token is a candidate when a search has no full scorer


@dataclass(frozen=True)
class WeightedScorer:
    """An extra scorer for a search (a language model, a biasing list, a toy in a test) and its weight."""

    name: str  # its key in `Hypothesis.scores` (its own, unweighted log-probability of the output)
    scorer: Scorer  # the scorer
    weight: float  # its weight in a hypothesis' total score; 0 = not run


class DecoderScorer(Scorer):
    """An attention decoder (`init_state` / `step` / `select_state`, see `malsori.nn.decoders`) as a full scorer.

    The state holds the decoder's state, the prefix ys [N, L] (sos first) whose newest token the decoder has not
    read yet, and "frame": the encoder frame the decoder attended to when it chose that token (the decoder's own
    "frame" if it keeps one, LAS or MoChA, else the argmax of its attention weights "attn").
    """

    def __init__(self, decoder: Any, sos: int = SPECIAL_IDS.sos) -> None:
        self.decoder, self.sos = decoder, sos

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        dec = self.decoder.init_state(memory, memory_lens)
        ys = torch.full((n, 1), self.sos, dtype=torch.long, device=memory.device)
        for token in prompt:  # the prompt is read like output tokens, but nothing is scored
            _, dec = self.decoder.step(ys, dec, memory, memory_lens)
            ys = torch.cat((ys, ys.new_full((n, 1), int(token))), 1)
        return {"dec": dec, "ys": ys, "frame": None}

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        if "log_probs" not in state:
            log_probs, dec = self.decoder.step(state["ys"], state["dec"], memory, memory_lens)
            state = {"dec": dec, "ys": state["ys"], "frame": state["frame"], "log_probs": log_probs.float()}
        log_probs = state["log_probs"]
        return (log_probs if candidates is None else log_probs.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        own = getattr(self.decoder, "select_state", None)
        dec = own(state["dec"], index) if own is not None else select_state(state["dec"], index)
        ys = torch.cat((state["ys"].index_select(0, index), tokens[:, None]), 1)
        return {"dec": dec, "ys": ys, "frame": self._attended(dec)}

    def token_frame(self, state: State) -> Tensor | None:
        return state["frame"]

    @staticmethod
    def _attended(dec: State) -> Tensor | None:
        """The frame a decoder state (after a step) attended to: its "frame", else the argmax of "attn"."""
        if isinstance(dec, dict) and dec.get("frame") is not None:
            return dec["frame"]
        attn = dec.get("attn") if isinstance(dec, dict) else None
        return None if attn is None else attn.argmax(-1)


class CTCPrefixScorer(PartialScorer):
    """CTC prefix scores for joint CTC/attention decoding (Watanabe et al., 2017, Algorithm 2), vectorized.

    For a prefix g the state holds the CTC forward variables r^n_t(g) / r^b_t(g) — the log-probability that
    frames 1..t collapse to g with frame t non-blank / blank — and ψ(g), the log-probability that the labels of
    the whole utterance *start with* g. For a candidate c, one pass over time gives r(g+c) and ψ(g+c) for all
    hypotheses × candidates together; the score is ψ(g+c) − ψ(g). For eos, ψ(g+eos) = log p(g) = the full CTC
    log-probability of g (r^n + r^b at the utterance's last frame). So the scores of a finished hypothesis
    telescope to log p_ctc(tokens | x), the same number `ctc_loss` gives. Blank is never a candidate (−inf).

    `log_probs` [B, T, V] are the CTC head's log-softmax outputs, `lengths` [B] its valid frames. `init_state`
    receives N = B × beam hypotheses, hypothesis n belonging to utterance n // beam. It scores the output against
    the audio, so it reads no prompt and no memory (the log-probs are its memory).
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int = SPECIAL_IDS.blank,
                 eos: int = SPECIAL_IDS.eos) -> None:
        self.x = log_probs.float().transpose(0, 1)  # [T, B, V]: time-major for the recursion
        self.lengths = lengths.to(log_probs.device).long().clamp(min=1)
        self.blank, self.eos = blank, eos
        self.vocab_size = log_probs.size(-1)

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        """Empty prefix: r^n = −inf, r^b_t = Σ_{τ≤t} log p(blank at τ), ψ = 0; `utt` maps hypothesis → utterance,
        `last` is the newest label (−1: none) and `length` the number of labels."""
        b = self.x.size(1)
        if n % b:
            raise ValueError(f"{n} hypotheses cannot be split evenly over {b} utterances")
        utt = torch.arange(n, device=self.x.device) // (n // b)
        rb = self.x[:, utt, self.blank].cumsum(0).t()  # [N, T]
        r = torch.stack((torch.full_like(rb, float("-inf")), rb), dim=-1)  # [N, T, 2]: (non-blank, blank)
        return {"r": r, "psi": rb.new_zeros(n), "utt": utt, "last": utt.new_full((n,), -1),
                "length": utt.new_zeros(n), "frame": None}

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        """candidates [N, K] → (ψ(g+c) − ψ(g) [N, K], the state with the N·K extended prefixes' variables)."""
        if candidates is None:
            raise ValueError("the CTC prefix scorer scores candidates only (it is a PartialScorer)")
        n, k = candidates.shape
        t_max = self.x.size(0)
        length = state["length"]  # |g|: labels in each prefix
        utt, r_g = state["utt"], state["r"].transpose(0, 1)  # r_g [T, N, 2]
        x = self.x[:, utt[:, None], candidates]  # [T, N, K]: log p(candidate at t)
        x_blank = self.x[:, utt, self.blank][:, :, None]  # [T, N, 1]
        r_sum = torch.logaddexp(r_g[..., 0], r_g[..., 1])  # [T, N]: log p(frames 1..t collapse to g)
        # φ_t: probability of g by frame t from which c can start anew; a repeated label needs a blank in between.
        repeat = (candidates == state["last"][:, None]) & (length > 0)[:, None]
        phi = torch.where(repeat[None], r_g[..., 1, None], r_sum[..., None])  # [T, N, K]

        empty = (length == 0)[:, None]  # [N, 1]: g is the empty prefix, so c may start at frame 0
        rn = torch.full_like(x, float("-inf"))
        rb = torch.full_like(x, float("-inf"))
        rn[0] = torch.where(empty, x[0], float("-inf"))
        start = length.clamp(min=1)  # g+c needs at least |g|+1 frames (earlier r of a longer g are −inf anyway)
        for t in range(int(start.min()) if n else t_max, t_max):
            rn[t] = torch.logaddexp(rn[t - 1], phi[t - 1]) + x[t]
            rb[t] = torch.logaddexp(rn[t - 1], rb[t - 1]) + x_blank[t]

        # ψ(g+c) = Σ_t φ_{t-1} p_t(c): c emitted first at frame t (t < the utterance's length), anything after.
        frames = torch.arange(t_max, device=x.device)[:, None, None]
        valid = (frames >= start[None, :, None]) & (frames < self.lengths[utt][None, :, None])
        starts = torch.cat((torch.where(empty[None], rn[:1], float("-inf")),
                            torch.where(valid[1:], phi[:-1] + x[1:], float("-inf"))), dim=0)
        psi = torch.logsumexp(starts, dim=0)  # [N, K]
        full = r_sum.gather(0, (self.lengths[utt] - 1)[None]).squeeze(0)  # [N]: log p(g), for eos
        psi = torch.where(candidates == self.eos, full[:, None], psi)
        psi = psi.masked_fill(candidates == self.blank, float("-inf"))

        psi_g = state["psi"][:, None]
        scores = torch.where(torch.isinf(psi_g), float("-inf"), psi - psi_g)
        new_r = torch.stack((rn, rb), dim=-1).permute(1, 2, 0, 3).reshape(n * k, t_max, 2)
        frame = starts.argmax(0).reshape(n * k)  # the most likely frame where c was emitted
        return scores, {**state, "candidates": candidates, "next_r": new_r, "next_psi": psi.reshape(n * k),
                        "next_frame": frame}

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        cands = state["candidates"].index_select(0, index)
        column = (cands == tokens[:, None]).int().argmax(1)  # candidates hold each label once (blank aside)
        rows = index * cands.size(1) + column
        return {"r": state["next_r"].index_select(0, rows), "psi": state["next_psi"].index_select(0, rows),
                "utt": state["utt"].index_select(0, index), "last": tokens,
                "length": state["length"].index_select(0, index) + 1,
                "frame": state["next_frame"].index_select(0, rows)}

    def select_state(self, state: State, index: Tensor) -> State:
        """Rows of an unscored state (a scored one keeps N·K candidate rows: extend from it instead)."""
        return select_state({key: state[key] for key in ("r", "psi", "utt", "last", "length", "frame")}, index)

    def token_frame(self, state: State) -> Tensor | None:
        """The frame [N] where each hypothesis' newest token most likely starts (None before the first token)."""
        return state["frame"]
