"""Scorers for beam search: anything that gives log-probabilities for the next token of a batch of prefixes.

Every scorer works on N hypotheses at once. Its state is a dict (or tuple/list) of tensors whose first dimension
is the hypothesis, so the search can reorder and duplicate hypotheses with `select_state(state, index)`.

- A *full* scorer scores every token: `score(ys [N, L], state, memory, memory_lens) -> (log_probs [N, V], state)`,
  where ys holds each prefix starting with sos, and the returned state has consumed the whole prefix (so it is
  selected by hypothesis index).
- A *partial* scorer (`score_partial`) scores only K candidate tokens per hypothesis that the full scorers picked:
  `score_partial(ys, candidates [N, K], state, memory, memory_lens) -> (scores [N, K], state)`; the returned state
  already includes each candidate and has N·K rows (row n·K + k for hypothesis n extended by candidates[n, k]).

Conventions: scores are natural-log probabilities; a scorer's output for token c is log p(c | prefix), and for
the eos token log p(end | prefix); summed over a finished hypothesis (its tokens, then eos) they give the
scorer's log-probability of the whole sequence. Since eos is scored like any token, no separate "final
score" is needed. Weights, the length bonus and pruning live in `BeamSearch`. A scorer may also offer
`token_frame(state) -> [N] | None`, the encoder frame of each hypothesis' newest token, for word timings.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

State = Any  # a dict / tuple / list of tensors (first dimension = hypothesis) or None entries


def select_state(state: State, index: Tensor) -> State:
    """Pick (reorder, duplicate) hypotheses: index_select on dim 0 of every tensor in a dict / tuple / list state.

    Nested containers are followed; None (and any non-tensor) stays as it is.
    """
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, dict):
        return {key: select_state(value, index) for key, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(select_state(value, index) for value in state)
    return state


@runtime_checkable
class Scorer(Protocol):
    """A full scorer: next-token log-probs for N prefixes (see the module docstring)."""

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State: ...

    def score(self, ys: Tensor, state: State, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, State]: ...

    def select_state(self, state: State, index: Tensor) -> State: ...


@runtime_checkable
class PartialScorer(Protocol):
    """A scorer too costly to score every token: it scores the K candidates chosen by the full scorers."""

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State: ...

    def score_partial(
        self, ys: Tensor, candidates: Tensor, state: State, memory: Tensor, memory_lens: Tensor
    ) -> tuple[Tensor, State]: ...

    def select_state(self, state: State, index: Tensor) -> State: ...

    vocab_size: int  # every token is a candidate when a search has no full scorer


class DecoderScorer:
    """Adapts an attention decoder (`init_state` / `step` / `select_state`, see docs) to the full-scorer protocol."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State:
        return self.decoder.init_state(memory, memory_lens)

    def score(self, ys: Tensor, state: State, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, State]:
        log_probs, state = self.decoder.step(ys, state, memory, memory_lens)
        return log_probs.float(), state

    def select_state(self, state: State, index: Tensor) -> State:
        own = getattr(self.decoder, "select_state", None)
        return own(state, index) if own is not None else select_state(state, index)

    def token_frame(self, state: State) -> Tensor | None:
        """The decoder's own "frame" of the newest token if its state keeps one (LAS; MoChA's halt), else the argmax
        of the attention weights it used, when its state keeps them."""
        if isinstance(state, dict) and state.get("frame") is not None:
            return state["frame"]
        attn = state.get("attn") if isinstance(state, dict) else None
        return None if attn is None else attn.argmax(-1)


class CTCPrefixScorer:
    """CTC prefix scores for joint CTC/attention decoding (Watanabe et al., 2017, Algorithm 2), vectorized.

    For a prefix g the state holds the CTC forward variables r^n_t(g) / r^b_t(g) — the log-probability that
    frames 1..t collapse to g with frame t non-blank / blank — and ψ(g), the log-probability that the labels of
    the whole utterance *start with* g. For a candidate c, one pass over time gives r(g+c) and ψ(g+c) for all
    hypotheses × candidates together; the score is ψ(g+c) − ψ(g). For eos, ψ(g+eos) = log p(g) = the full CTC
    log-probability of g (r^n + r^b at the utterance's last frame). So the scores of a finished hypothesis
    telescope to log p_ctc(tokens | x), the same number `ctc_loss` gives. Blank is never a candidate (−inf).

    `log_probs` [B, T, V] are the CTC head's log-softmax outputs, `lengths` [B] its valid frames. `init_state`
    receives N = B × beam hypotheses, hypothesis n belonging to utterance n // beam.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int = 0, eos: int = 2) -> None:
        self.x = log_probs.float().transpose(0, 1)  # [T, B, V]: time-major for the recursion
        self.lengths = lengths.to(log_probs.device).long().clamp(min=1)
        self.blank, self.eos = blank, eos
        self.vocab_size = log_probs.size(-1)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State:
        """Empty prefix: r^n = −inf, r^b_t = Σ_{τ≤t} log p(blank at τ), ψ = 0; `utt` maps hypothesis → utterance."""
        n, b = memory_lens.size(0), self.x.size(1)
        if n % b:
            raise ValueError(f"{n} hypotheses cannot be split evenly over {b} utterances")
        utt = torch.arange(n, device=self.x.device) // (n // b)
        rb = self.x[:, utt, self.blank].cumsum(0).t()  # [N, T]
        r = torch.stack((torch.full_like(rb, float("-inf")), rb), dim=-1)  # [N, T, 2]: (non-blank, blank)
        return {"r": r, "psi": rb.new_zeros(n), "utt": utt}

    def score_partial(
        self, ys: Tensor, candidates: Tensor, state: State, memory: Tensor | None = None,
        memory_lens: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        """ys [N, L] (sos + g), candidates [N, K] → (ψ(g+c) − ψ(g) [N, K], state of the N·K extended prefixes)."""
        n, k = candidates.shape
        t_max = self.x.size(0)
        prefix_len = ys.size(1) - 1  # |g|: the sos in front is not a label
        utt, r_g = state["utt"], state["r"].transpose(0, 1)  # r_g [T, N, 2]
        x = self.x[:, utt[:, None], candidates]  # [T, N, K]: log p(candidate at t)
        x_blank = self.x[:, utt, self.blank][:, :, None]  # [T, N, 1]
        r_sum = torch.logaddexp(r_g[..., 0], r_g[..., 1])  # [T, N]: log p(frames 1..t collapse to g)
        # φ_t: probability of g by frame t from which c can start anew; a repeated label needs a blank in between.
        repeat = (candidates == ys[:, -1:]) & (prefix_len > 0)
        phi = torch.where(repeat[None], r_g[..., 1, None], r_sum[..., None])  # [T, N, K]

        rn = torch.full_like(x, float("-inf"))
        rb = torch.full_like(x, float("-inf"))
        if prefix_len == 0:
            rn[0] = x[0]
        start = max(prefix_len, 1)  # g+c needs at least |g|+1 frames
        for t in range(start, t_max):
            rn[t] = torch.logaddexp(rn[t - 1], phi[t - 1]) + x[t]
            rb[t] = torch.logaddexp(rn[t - 1], rb[t - 1]) + x_blank[t]

        # ψ(g+c) = Σ_t φ_{t-1} p_t(c): c emitted first at frame t (t < the utterance's length), anything after.
        frames = torch.arange(t_max, device=x.device)[:, None, None]
        valid = (frames >= start) & (frames < self.lengths[utt][None, :, None])
        starts = torch.cat((rn[:1] if prefix_len == 0 else torch.full_like(x[:1], float("-inf")),
                            torch.where(valid[1:], phi[:-1] + x[1:], float("-inf"))), dim=0)
        psi = torch.logsumexp(starts, dim=0)  # [N, K]
        full = r_sum.gather(0, (self.lengths[utt] - 1)[None]).squeeze(0)  # [N]: log p(g), for eos
        psi = torch.where(candidates == self.eos, full[:, None], psi)
        psi = psi.masked_fill(candidates == self.blank, float("-inf"))

        psi_g = state["psi"][:, None]
        scores = torch.where(torch.isinf(psi_g), float("-inf"), psi - psi_g)
        new_r = torch.stack((rn, rb), dim=-1).permute(1, 2, 0, 3).reshape(n * k, t_max, 2)
        frame = starts.argmax(0).reshape(n * k)  # the most likely frame where c was emitted
        new_state = {"r": new_r, "psi": psi.reshape(n * k), "utt": utt.repeat_interleave(k), "frame": frame}
        return scores, new_state

    def select_state(self, state: State, index: Tensor) -> State:
        return select_state(state, index)

    def token_frame(self, state: State) -> Tensor | None:
        """The frame [N] where each hypothesis' newest token most likely starts (None before the first token)."""
        return state.get("frame")
