"""Recurrent attention-model decoders: the fixed-vector baseline and LAS (LSTM + location-aware attention).

Both follow the decoder interface used by the search (see `malsori.decode.scorers`):
`forward(memory, memory_lens, ys_in, ys_in_lens) -> logits` (teacher forcing),
`init_state(memory, memory_lens)`, `step(ys, state, memory, memory_lens) -> (log_probs, state)` and
`select_state(state, index)`. A state is a dict of tensors whose first dimension is the hypothesis.
`forward` runs the very same step function as `step`, so the search scores exactly what training optimized.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.nn.mask import length_mask
from malsori.nn.mocha import MonotonicChunkwiseAttention, initial_alignment
from malsori.nn.state import select_state

State = dict[str, Tensor | None]
Summary = Literal["bilstm", "last", "mean"]


def summarize(memory: Tensor, memory_lens: Tensor, how: Summary) -> Tensor:
    """One vector per utterance from memory [B, T, D] → [B, D].

    "bilstm": forward half at the last valid frame + backward half at frame 0 (the final states of a BiLSTM);
    "last": the whole vector at the last valid frame; "mean": the average over valid frames.
    """
    rows = torch.arange(memory.size(0), device=memory.device)
    last = (memory_lens - 1).clamp(min=0)
    if how == "bilstm":
        half = memory.size(-1) // 2
        return torch.cat((memory[rows, last, :half], memory[:, 0, half:]), dim=-1)
    if how == "last":
        return memory[rows, last]
    mask = length_mask(memory_lens, memory.size(1))[..., None]
    return (memory * mask).sum(1) / mask.sum(1).clamp(min=1)


class FixedVectorDecoder(nn.Module):
    """Encoder–decoder of 2014 (Sutskever et al.; Cho et al.): an LSTM conditioned only on ONE summary vector.

    The summary (see `summarize`) sets the initial LSTM state (h0 = tanh(W_h v), c0 = W_c v) and is concatenated
    to the token embedding at every step; there is no attention, so long inputs must squeeze through v.
    """

    def __init__(self, vocab_size: int, memory_dim: int, embed_dim: int = 128, hidden_size: int = 320,
                 num_layers: int = 2, dropout: float = 0.1, summary: Summary = "mean") -> None:
        super().__init__()
        self.summary, self.num_layers, self.hidden_size = summary, num_layers, hidden_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.init_h = nn.Linear(memory_dim, num_layers * hidden_size)
        self.init_c = nn.Linear(memory_dim, num_layers * hidden_size)
        self.lstm = nn.LSTM(embed_dim + memory_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State:
        v = summarize(memory, memory_lens, self.summary)
        shape = (v.size(0), self.num_layers, self.hidden_size)
        return {"h": torch.tanh(self.init_h(v)).view(shape), "c": self.init_c(v).view(shape), "summary": v}

    def _run(self, ys: Tensor, state: State) -> tuple[Tensor, State]:
        """ys [N, L] tokens → (logits [N, L, V], state after the last of them)."""
        v = state["summary"]
        x = torch.cat((self.dropout(self.embed(ys)), v[:, None].expand(-1, ys.size(1), -1)), dim=-1)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        y, (h, c) = self.lstm(x, hc)
        return self.output(self.dropout(y)), {"h": h.transpose(0, 1), "c": c.transpose(0, 1), "summary": v}

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """Teacher forcing: ys_in [B, L] (sos + tokens, 0-padded at the end) → logits [B, L, V]."""
        return self._run(ys_in, self.init_state(memory, memory_lens))[0]

    def step(self, ys: Tensor, state: State, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, State]:
        """Feed the newest token ys[:, -1] → (next-token log-probs [N, V], state)."""
        logits, state = self._run(ys[:, -1:], state)
        return F.log_softmax(logits[:, 0].float(), dim=-1), state

    def select_state(self, state: State, index: Tensor) -> State:
        return select_state(state, index)


class LocationAwareAttention(nn.Module):
    """Additive attention with location features (Chorowski et al., 2015).

    e_t = wᵀ tanh(W s + V h_t + U f_t + b), f = conv1d(previous weights): the conv lets the attention know where
    it looked last step, so it moves forward monotonically instead of jumping to similar-sounding frames.
    """

    def __init__(self, query_dim: int, memory_dim: int, dim: int, filters: int, kernel: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, dim, bias=False)
        self.key = nn.Linear(memory_dim, dim)
        self.conv = nn.Conv1d(1, filters, kernel, padding=kernel // 2, bias=False) if filters else None
        self.location = nn.Linear(filters, dim, bias=False) if filters else None
        self.energy = nn.Linear(dim, 1, bias=False)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        """query [N, Q], keys = self.key(memory) [N, T, A], mask [N, T], prev weights [N, T] → (context [N, D], weights [N, T]).
        With no location filters it is Bahdanau et al.'s (2015) additive attention: e_t = wᵀ tanh(W s + V h_t + b)."""
        e = keys + self.query(query)[:, None]
        if self.conv is not None:
            e = e + self.location(self.conv(prev[:, None]).transpose(1, 2))
        e = self.energy(torch.tanh(e)).squeeze(-1)
        weights = e.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.bmm(weights[:, None], memory).squeeze(1), weights


class MultiplicativeAttention(nn.Module):
    """Luong et al.'s (2015) attention: e_t = sᵀ h_t ("dot", query and memory of one size) or sᵀ W h_t ("general");
    the same call as `LocationAwareAttention` (the previous weights are not used)."""

    def __init__(self, query_dim: int, memory_dim: int, how: Literal["dot", "general"]) -> None:
        super().__init__()
        if how == "dot" and query_dim != memory_dim:
            raise ValueError(f"dot attention needs the decoder state ({query_dim}) and memory ({memory_dim}) of one size")
        self.key = nn.Identity() if how == "dot" else nn.Linear(memory_dim, query_dim, bias=False)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        e = torch.bmm(keys, query[:, :, None]).squeeze(-1)
        weights = e.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.bmm(weights[:, None], memory).squeeze(1), weights


Attention = Literal["location", "mocha", "additive", "dot", "general"]


class LASDecoder(nn.Module):
    """The speller of Listen, Attend and Spell (Chan et al., 2016) with location-aware attention or MoChA.

    Per step: s_i = LSTM(s_{i-1}, [embed(y_{i-1}); c_{i-1}]) → c_i = Attend(s_i, memory) → P(y_i) = MLP([s_i; c_i]).
    The state keeps the LSTM states, the context, the attention weights "attn" [N, T], the projected memory "keys"
    (computed once per utterance) and "frame" [N], the encoder frame of the newest token (argmax of the weights;
    for MoChA the last frame of its chunk).

    `attention` "additive" (Bahdanau et al., 2015: no location features), "dot" or "general" (Luong et al., 2015)
    make it the attention LSTM of machine translation (with input feeding: the context enters the next step).
    `attention="mocha"` (Chiu & Raffel, 2018; see `malsori.nn.mocha`) makes the speller streamable: it trains on
    the expected (soft) monotonic attention, and in eval mode both `forward` and `step` use the hard online
    attention, so beam search, rescoring and the streaming decoder all score what is decoded. Its state adds the
    expected alignment "alpha" (log, float64) and the halt index "index" [N] (memory length = ran past the end).
    """

    def __init__(self, vocab_size: int, memory_dim: int, embed_dim: int = 128, hidden_size: int = 320,
                 num_layers: int = 2, attention_dim: int = 128, location_filters: int = 16,
                 location_kernel: int = 31, dropout: float = 0.1, attention: Attention = "location",
                 mocha_chunk: int = 4, mocha_noise: float = 1.0, mocha_init_bias: float = -4.0) -> None:
        super().__init__()
        self.num_layers, self.hidden_size, self.kind = num_layers, hidden_size, attention
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embed_dim + memory_dim if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        if attention in ("location", "additive"):
            filters = location_filters if attention == "location" else 0
            self.attention = LocationAwareAttention(hidden_size, memory_dim, attention_dim, filters, location_kernel)
        elif attention in ("dot", "general"):
            self.attention = MultiplicativeAttention(hidden_size, memory_dim, attention)
        elif attention == "mocha":
            self.attention = MonotonicChunkwiseAttention(hidden_size, memory_dim, attention_dim, mocha_chunk,
                                                         mocha_init_bias, mocha_noise)
        else:
            raise ValueError(f"unknown LAS attention {attention!r} (known: location, mocha, additive, dot, general)")
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(nn.Linear(hidden_size + memory_dim, hidden_size), nn.Tanh(), nn.Dropout(dropout),
                                    nn.Linear(hidden_size, vocab_size))

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> State:
        """Zero LSTM states and context; the previous attention starts uniform over the valid frames (location) or
        the monotonic reader on frame 0 (MoChA)."""
        n, t, d = memory.shape
        mask = length_mask(memory_lens, t)
        zeros = memory.new_zeros(n, self.num_layers, self.hidden_size)
        attn = mask.to(memory.dtype) / memory_lens.clamp(min=1)[:, None].to(memory.dtype)
        state = {"h": zeros, "c": zeros, "context": memory.new_zeros(n, d), "attn": attn,
                 "keys": self.attention.key(memory), "frame": memory_lens.new_zeros(n)}
        if self.kind == "mocha":
            state["alpha"] = initial_alignment(n, t, memory.device)
            state["index"] = memory_lens.new_zeros(n)
        return state

    def advance(self, y: Tensor, state: State) -> tuple[Tensor, Tensor, Tensor]:
        """The LSTM part of a step, which needs no memory: token y [N] → (top output [N, H], h, c [N, layers, H])."""
        x = torch.cat((self.dropout(self.embed(y)), state["context"]), dim=-1)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state["h"][:, i], state["c"][:, i]))
            hs.append(h)
            cs.append(c)
            x = self.dropout(h)
        return h, torch.stack(hs, 1), torch.stack(cs, 1)

    def readout(self, h: Tensor, context: Tensor) -> Tensor:
        """Top LSTM output [N, H] + context [N, D] → logits [N, V]."""
        return self.output(torch.cat((self.dropout(h), context), dim=-1))

    def _step(self, y: Tensor, state: State, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, State]:
        """One token y [N] → (logits [N, V], state)."""
        h, hs, cs = self.advance(y, state)
        new = {**state, "h": hs, "c": cs}
        mask = length_mask(memory_lens, memory.size(1))
        if self.kind != "mocha":
            context, attn = self.attention(h, state["keys"], memory, mask, state["attn"])
            frame = attn.argmax(-1)
        elif self.training:
            context, attn, new["alpha"] = self.attention.soft(h, state["keys"], memory, mask, state["alpha"])
            frame = new["alpha"].argmax(-1)
        else:
            context, attn, index, _ = self.attention.hard(h, state["keys"], memory, memory_lens, state["index"])
            new["index"] = index
            frame = torch.minimum(index, (memory_lens - 1).clamp(min=0))
        new.update(context=context, attn=attn, frame=frame)
        return self.readout(h, context), new

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """Teacher forcing: ys_in [B, L] (sos + tokens, 0-padded at the end) → logits [B, L, V]."""
        state = self.init_state(memory, memory_lens)
        logits = []
        for i in range(ys_in.size(1)):
            out, state = self._step(ys_in[:, i], state, memory, memory_lens)
            logits.append(out)
        return torch.stack(logits, 1)

    def step(self, ys: Tensor, state: State, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, State]:
        """Feed the newest token ys[:, -1] → (next-token log-probs [N, V], state)."""
        logits, state = self._step(ys[:, -1], state, memory, memory_lens)
        return F.log_softmax(logits.float(), dim=-1), state

    def select_state(self, state: State, index: Tensor) -> State:
        return select_state(state, index)
