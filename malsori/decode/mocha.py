"""Online greedy decoding with MoChA decoders: tokens come out while the encoder frames are still arriving.

Each output step runs the decoder on the frames that have arrived; its monotonic reader(s) scan them from where
they halted last step. If every reader halts, the token is emitted at once; if one reaches the newest frame without
halting, the step waits for more frames (`accept`). Once the input has ended (`finish`), a reader that runs past
the last frame attends to nothing (zero context), as offline MoChA does, and decoding goes on until eos or the
length limit. The result equals `AttentionModel.greedy` on the whole utterance, whatever the sizes of the pieces
the frames arrive in. `MonotonicStream` holds this waiting / length-limit logic once; `MonotonicGreedyStream`
(LAS, one reader) and `TransformerMonotonicStream` (one reader per block) supply the decoder's step.
Extra scorers (`RowFusion`; they get no memory, as the audio is still arriving) and a length bonus are added to
the decoder's log-probs before each choice, as `AttentionModel.greedy` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.fusion import RowFusion, active
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import WeightedScorer
from malsori.nn.decoders import LASDecoder
from malsori.nn.transformer import TransformerDecoder
from malsori.tokenizer import SPECIAL_IDS, SpecialIds


@dataclass
class StreamToken:
    """One emitted token and when: the frame its attention halted at, and the frames that had arrived by then."""

    token: int  # token id (eos included, as the last one)
    frame: int  # encoder frame the monotonic reader halted at (the last frame if it ran past the end)
    arrived: int  # encoder frames that had arrived when the token was emitted; frame < arrived always
    score: float  # the decoder's log-probability of the token
    parts: tuple[float, ...] = ()  # each extra scorer's log-probability of the token


class MonotonicStream(ABC):
    """Greedy online decoding of one utterance with a MoChA decoder in eval mode (subclasses give the decoder step).

    `accept(frames [1, n, D])` appends encoder frames and returns the tokens that became decidable;
    `finish()` marks the end of the input and returns the rest (up to and including eos). `emitted` keeps every
    token with its halting frame and arrival count, for latency measurements. The length limit is the one of
    `AttentionModel.greedy`: step i ≥ max(1, ⌊max_len_ratio · frames⌋) may only emit eos; while the input is open
    such a step waits, since more frames raise the limit (a fixed `max_len` does not wait). Each step chooses the
    token by decoder log-prob + Σ w · extra scorer + `length_bonus` (not for eos).
    """

    def __init__(self, ids: SpecialIds = SPECIAL_IDS, max_len_ratio: float = 1.0, max_len: int | None = None,
                 scorers: Sequence[WeightedScorer] = (), length_bonus: float = 0.0) -> None:
        self.sos, self.eos, self.blank = ids.sos, ids.eos, ids.blank
        self.max_len_ratio, self.max_len, self.length_bonus = max_len_ratio, max_len, length_bonus
        self.fusion = RowFusion(scorers, 1) if active(scorers) else None
        self.memory: Tensor | None = None  # [1, arrived, D]: every frame received so far, nothing else
        self.last = self.sos  # newest token fed back
        self.finished = False  # no more frames will come
        self.done = False  # eos emitted
        self.emitted: list[StreamToken] = []

    @property
    def arrived(self) -> int:
        return 0 if self.memory is None else self.memory.size(1)

    @property
    def tokens(self) -> list[int]:
        """Emitted tokens without the final eos."""
        return [t.token for t in self.emitted if t.token != self.eos]

    @torch.no_grad()
    def accept(self, frames: Tensor) -> list[StreamToken]:
        """Append encoder frames [1, n, D] → the tokens emitted because of them."""
        if self.finished:
            raise RuntimeError("accept() after finish()")
        if frames.dim() != 3 or frames.size(0) != 1:
            raise ValueError(f"expected frames [1, n, D], got {tuple(frames.shape)}")
        self._append(frames)
        return self._run()

    @torch.no_grad()
    def finish(self) -> list[StreamToken]:
        """The input has ended: decode to eos (or the length limit) → the tokens emitted now."""
        self.finished = True
        if self.memory is None:
            raise RuntimeError("finish() before any frame arrived")
        return self._run()

    def hypothesis(self) -> Hypothesis:
        """The result as the offline searches give it (tokens without eos, their frames, summed log-probability;
        with extra scorers or a length bonus, the fused total, and `scores` of "att" and each scorer)."""
        toks = [t for t in self.emitted if t.token != self.eos]
        hyp = Hypothesis(tokens=[t.token for t in toks], score=sum(t.score for t in self.emitted),
                         token_frames=[t.frame for t in toks])
        if self.fusion is not None or self.length_bonus:
            weights = [s.weight for s in self.fusion.scorers] if self.fusion is not None else []
            hyp.score = sum(t.score + sum(w * p for w, p in zip(weights, t.parts)) for t in self.emitted)
            hyp.score += self.length_bonus * len(toks)
            names = self.fusion.names if self.fusion is not None else []
            hyp.scores = {"att": sum(t.score for t in self.emitted),
                          **{n: sum(t.parts[i] for t in self.emitted) for i, n in enumerate(names)}}
        return hyp

    def _max_len(self) -> int:
        if self.max_len is not None:
            return self.max_len
        return int((torch.tensor(float(self.arrived)) * self.max_len_ratio).long().clamp(min=1))

    @abstractmethod
    def _append(self, frames: Tensor) -> None:
        """Store newly arrived frames [1, n, D] (and whatever the decoder precomputes from them)."""

    @abstractmethod
    def _step(self) -> tuple[Tensor, int] | None:
        """Try the next output step on the arrived frames → (log-probs [V], halt of the reader whose halt is the
        token's frame; `arrived` if it ran past the end), or None to wait for more frames. The step's new decoder
        state is kept aside until `_commit`."""

    @abstractmethod
    def _commit(self, token: int) -> None:
        """Adopt the state of the step just taken, `token` being its output."""

    def _run(self) -> list[StreamToken]:
        """Emit tokens until one needs frames that have not arrived (or eos)."""
        out: list[StreamToken] = []
        n = self.arrived
        while not self.done:
            i = len(self.emitted)
            at_limit = i >= self._max_len()
            if at_limit and not self.finished and self.max_len is None:
                break  # more frames may still raise the limit
            step = self._step()
            if step is None:
                break  # a reader reached the newest frame without halting: wait
            log_probs, halt = step
            gains, parts = log_probs, None
            if self.fusion is not None:
                weighted, parts = self.fusion.next()  # [1, V], [1, S, V]
                gains = gains + weighted[0]
            if self.length_bonus:
                gains = gains + self.length_bonus * (torch.arange(gains.size(0), device=gains.device) != self.eos)
            banned = torch.zeros_like(log_probs, dtype=torch.bool)
            banned[self.blank] = True
            if at_limit:
                banned[:] = True
                banned[self.eos] = False
            token = int(gains.masked_fill(banned, float("-inf")).max(-1)[1])
            extra = () if parts is None else tuple(parts[0, :, token].tolist())
            tok = StreamToken(token, min(halt, n - 1), n, float(log_probs[token]), extra)
            self.emitted.append(tok)
            out.append(tok)
            self._commit(tok.token)
            self.last = tok.token
            self.done = tok.token == self.eos
            if self.fusion is not None and not self.done:
                self.fusion.extend(torch.tensor([token]))
        return out


class MonotonicGreedyStream(MonotonicStream):
    """Online greedy decoding with a `LASDecoder(attention="mocha")`: the decoder LSTM runs once per step (it needs no
    audio); only the attention is retried when frames arrive, over the frames from the previous halt's chunk on."""

    def __init__(self, decoder: LASDecoder, **settings) -> None:
        """`settings`: those of `MonotonicStream` (ids, length limits, extra scorers, length bonus)."""
        if getattr(decoder, "kind", None) != "mocha":
            raise ValueError("MonotonicGreedyStream needs a LAS decoder with attention='mocha'")
        super().__init__(**settings)
        self.decoder = decoder
        self.attention = decoder.attention
        self.keys: Tensor | None = None  # [1, arrived, 2A]: the frames' attention projections
        self.state: dict | None = None  # LSTM h, c and the previous context
        self.prev = 0  # frame the reader halted at last step (the scan starts there)
        self.pending: tuple[Tensor, Tensor, Tensor] | None = None  # LSTM output of the step waiting for frames
        self.taken: tuple[Tensor, int] | None = None  # context and halt of the step just taken

    def _append(self, frames: Tensor) -> None:
        keys = self.attention.key(frames)
        if self.memory is None:
            self.memory, self.keys = frames, keys
            self.state = {"h": frames.new_zeros(1, self.decoder.num_layers, self.decoder.hidden_size),
                          "context": frames.new_zeros(1, frames.size(-1))}
            self.state["c"] = self.state["h"]
        else:
            self.memory, self.keys = torch.cat((self.memory, frames), 1), torch.cat((self.keys, keys), 1)

    def _step(self) -> tuple[Tensor, int] | None:
        n, w = self.arrived, self.attention.chunk
        if self.pending is None:
            y = torch.tensor([self.last], device=self.memory.device)
            self.pending = self.decoder.advance(y, self.state)
        h = self.pending[0]
        lo = max(0, min(self.prev, n) - w + 1)  # frames before the chunk of the previous halt are never needed
        context, _, index, found = self.attention.hard(
            h, self.keys[:, lo:], self.memory[:, lo:], torch.tensor([n - lo]), torch.tensor([self.prev - lo]))
        if not bool(found) and not self.finished:
            return None
        halt = int(index) + lo  # n (past the end) when not found
        self.taken = (context, halt)
        return self.decoder.readout(h, context).float().log_softmax(-1)[0], halt

    def _commit(self, token: int) -> None:
        _, hs, cs = self.pending
        context, halt = self.taken
        self.state = {"h": hs, "c": cs, "context": context}
        self.prev, self.pending, self.taken = halt, None, None


class TransformerMonotonicStream(MonotonicStream):
    """Online greedy decoding with a `TransformerDecoder(cross="mocha")`: each step runs the decoder on the prefix
    over the arrived frames and is emitted only when every block's reader halted inside them; a step that waits is
    simply redone when frames arrive (a block's earlier outputs are kept in the state, so nothing else is redone).
    The token's frame is the last block's halt."""

    def __init__(self, decoder: TransformerDecoder, **settings) -> None:
        """`settings`: those of `MonotonicStream` (ids, length limits, extra scorers, length bonus)."""
        if getattr(decoder, "cross", None) != "mocha":
            raise ValueError("TransformerMonotonicStream needs a Transformer decoder with cross='mocha'")
        if decoder.training:
            raise ValueError("TransformerMonotonicStream decodes with the hard reader: call .eval() on the model first")
        super().__init__(**settings)
        self.decoder = decoder
        self.keys: Tensor | None = None  # [1, layers, arrived, 2A]: every block's projections of the frames
        self.state: dict | None = None  # the decoder state after the last emitted token (its "keys" are not used)
        self.ys = [self.sos]  # sos + the emitted tokens: the prefix fed to the decoder
        self.taken: dict | None = None  # decoder state of the step just taken

    def _append(self, frames: Tensor) -> None:
        keys = torch.stack([layer.cross_attention.key(frames) for layer in self.decoder.layers], dim=1)
        if self.memory is None:
            self.memory, self.keys = frames, keys
            self.state = self.decoder.init_state(frames, torch.tensor([frames.size(1)], device=frames.device))
        else:
            self.memory, self.keys = torch.cat((self.memory, frames), 1), torch.cat((self.keys, keys), 2)

    def _step(self) -> tuple[Tensor, int] | None:
        n = self.arrived
        ys = torch.tensor([self.ys], device=self.memory.device)
        lens = torch.tensor([n], device=self.memory.device)
        log_probs, state = self.decoder.step(ys, {**self.state, "keys": self.keys}, self.memory, lens)
        if not self.finished and bool((state["index"] >= n).any()):
            return None
        self.taken = state
        return log_probs[0], int(state["index"][0, -1])

    def _commit(self, token: int) -> None:
        self.state, self.taken = self.taken, None
        self.ys.append(token)


def monotonic_stream(decoder, **settings) -> MonotonicStream:
    """The online greedy decoder for a MoChA attention decoder: LAS (attention="mocha") or Transformer (cross="mocha");
    `settings` are those of `MonotonicStream`."""
    if getattr(decoder, "cross", None) == "mocha":
        return TransformerMonotonicStream(decoder, **settings)
    return MonotonicGreedyStream(decoder, **settings)
