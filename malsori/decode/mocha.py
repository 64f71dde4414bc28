"""Online greedy decoding with a MoChA LAS decoder: tokens come out while the encoder frames are still arriving.

Each output step first runs the decoder LSTM (which needs no audio), then the hard monotonic reader scans the
frames that have arrived from where it halted last step. If it halts, the token is emitted at once; if it reaches
the newest frame without halting, the step waits for more frames (`accept`). Once the input has ended (`finish`),
a reader that runs past the last frame attends to nothing (zero context), as offline MoChA does, and decoding goes
on until eos or the length limit. The result equals `AttentionModel.greedy` on the whole utterance, whatever the
sizes of the pieces the frames arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from malsori.decode.result import Hypothesis
from malsori.nn.decoders import LASDecoder


@dataclass
class StreamToken:
    """One emitted token and when: the frame its attention halted at, and the frames that had arrived by then."""

    token: int  # token id (eos included, as the last one)
    frame: int  # encoder frame the monotonic reader halted at (the last frame if it ran past the end)
    arrived: int  # encoder frames that had arrived when the token was emitted; frame < arrived always
    score: float  # log-probability of the token


class MonotonicGreedyStream:
    """Greedy online decoding of one utterance with a `LASDecoder(attention="mocha")` in eval mode.

    `accept(frames [1, n, D])` appends encoder frames and returns the tokens that became decidable;
    `finish()` marks the end of the input and returns the rest (up to and including eos). `emitted` keeps every
    token with its halting frame and arrival count, for latency measurements. The length limit is the one of
    `AttentionModel.greedy`: step i ≥ max(1, ⌊max_len_ratio · frames⌋) may only emit eos; while the input is open
    such a step waits, since more frames raise the limit.
    """

    def __init__(self, decoder: LASDecoder, sos: int = 2, eos: int = 2, blank: int = 0, max_len_ratio: float = 1.0) -> None:
        if getattr(decoder, "kind", None) != "mocha":
            raise ValueError("MonotonicGreedyStream needs a LAS decoder with attention='mocha'")
        self.decoder, self.sos, self.eos, self.blank, self.max_len_ratio = decoder, sos, eos, blank, max_len_ratio
        self.attention = decoder.attention
        self.memory: Tensor | None = None  # [1, arrived, D]: every frame received so far, nothing else
        self.keys: Tensor | None = None  # [1, arrived, 2A]: their attention projections
        self.state: dict | None = None  # LSTM h, c and the previous context
        self.prev = 0  # frame the reader halted at last step (the scan starts there)
        self.last = sos  # newest token fed back
        self.pending: tuple[Tensor, Tensor, Tensor] | None = None  # LSTM output of the step waiting for frames
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
        keys = self.attention.key(frames)
        if self.memory is None:
            self.memory, self.keys = frames, keys
            self.state = {"h": frames.new_zeros(1, self.decoder.num_layers, self.decoder.hidden_size),
                          "context": frames.new_zeros(1, frames.size(-1))}
            self.state["c"] = self.state["h"]
        else:
            self.memory, self.keys = torch.cat((self.memory, frames), 1), torch.cat((self.keys, keys), 1)
        return self._run()

    @torch.no_grad()
    def finish(self) -> list[StreamToken]:
        """The input has ended: decode to eos (or the length limit) → the tokens emitted now."""
        self.finished = True
        if self.memory is None:
            raise RuntimeError("finish() before any frame arrived")
        return self._run()

    def hypothesis(self) -> Hypothesis:
        """The result as the offline searches give it (tokens without eos, their frames, summed log-probability)."""
        toks = [t for t in self.emitted if t.token != self.eos]
        return Hypothesis(tokens=[t.token for t in toks], score=sum(t.score for t in self.emitted),
                          token_frames=[t.frame for t in toks])

    def _max_len(self) -> int:
        return int((torch.tensor(float(self.arrived)) * self.max_len_ratio).long().clamp(min=1))

    def _run(self) -> list[StreamToken]:
        """Emit tokens until one needs frames that have not arrived (or eos)."""
        out: list[StreamToken] = []
        n, w = self.arrived, self.attention.chunk
        while not self.done:
            i = len(self.emitted)
            at_limit = i >= self._max_len()
            if at_limit and not self.finished:
                break  # more frames may still raise the limit
            if self.pending is None:
                y = torch.tensor([self.last], device=self.memory.device)
                self.pending = self.decoder.advance(y, self.state)
            h, hs, cs = self.pending
            lo = max(0, min(self.prev, n) - w + 1)  # frames before the chunk of the previous halt are never needed
            context, _, index, found = self.attention.hard(
                h, self.keys[:, lo:], self.memory[:, lo:], torch.tensor([n - lo]), torch.tensor([self.prev - lo]))
            if not bool(found) and not self.finished:
                break  # the reader reached the newest frame without halting: wait
            halt = int(index) + lo  # n (past the end) when not found
            log_probs = self.decoder.readout(h, context).float().log_softmax(-1)[0]
            banned = torch.zeros_like(log_probs, dtype=torch.bool)
            banned[self.blank] = True
            if at_limit:
                banned[:] = True
                banned[self.eos] = False
            score, token = log_probs.masked_fill(banned, float("-inf")).max(-1)
            tok = StreamToken(int(token), min(halt, n - 1), n, float(score))
            self.emitted.append(tok)
            out.append(tok)
            self.state = {"h": hs, "c": cs, "context": context}
            self.prev, self.last, self.pending = halt, tok.token, None
            self.done = tok.token == self.eos
        return out
