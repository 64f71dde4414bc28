"""Transformer encoder (conv subsampling + pre-LayerNorm self-attention blocks) and Transformer decoder.

Positions come from rotary embeddings inside self-attention (relative offsets); cross-attention is content-only,
as the memory already carries where each frame is. Pre-LN blocks (x + f(LN(x))) train without warm-up tricks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.nn.attention import MultiHeadSelfAttention, check_heads
from malsori.nn.chunked import ChunkConfig, ChunkedEncoder, LookAhead, block_attention
from malsori.nn.feedforward import FeedForward
from malsori.nn.kv_cache import block_cache, empty_cache, stack_cache
from malsori.nn.mask import length_mask
from malsori.nn.mocha import MonotonicChunkwiseAttention, initial_alignment
from malsori.nn.state import select_state
from malsori.nn.subsampling import LAYOUTS, Conv2dSubsampling


@dataclass
class TransformerEncoderConfig:
    """Sizes of a Transformer encoder; the defaults give ~5.1M parameters."""

    input_dim: int = bounded(80, ge=1)  # feature bins per input frame (log-mel); build_model sets it from the features
    d_model: int = bounded(256, ge=1)  # width of every block
    num_layers: int = bounded(6, ge=1)  # number of self-attention blocks
    num_heads: int = bounded(4, ge=1)  # attention heads; d_model / num_heads must be even (rotary embeddings)
    ff_expansion: int = bounded(4, ge=1)  # feed-forward hidden size = ff_expansion × d_model
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on every residual branch and after subsampling
    attention_dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on attention weights
    subsampling_factor: int = bounded(4, one_of=tuple(LAYOUTS))  # time reduction of the conv front-end: 4, 6 or 8
    subsampling_channels: int = bounded(64, ge=1)  # channels of the front-end convs
    chunk: ChunkConfig = field(default_factory=ChunkConfig)  # chunked attention for streaming (`causal` is unused)

    def __post_init__(self) -> None:
        check_heads(self.d_model, self.num_heads)


class TransformerBlock(nn.Module):
    """x + MHSA(LN(x)) → x + FFN(LN(x)), both branches with dropout."""

    def __init__(self, d_model: int, num_heads: int, ff_expansion: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm_att = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, num_heads, attention_dropout)
        self.ff = FeedForward(d_model, ff_expansion, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, attn_mask: Tensor | None = None, positions: Tensor | None = None,
        cache: tuple[Tensor, Tensor, Tensor] | None = None, keep: int = -1, lookahead: LookAhead | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """x [B, T, D]; mask [B, T] True on real frames; attn_mask [T, T] True = may attend.

        Streaming: `cache` = (keys, values, unused conv state) of the past → also returns the next chunk's cache;
        `lookahead` marks the look-ahead copies at the end of x (kept out of the cache); attn_mask is then
        [T, L + T] over the cached and new frames (None = all).
        """
        a, keys, values = block_attention(self.attention, self.norm_att(x), mask, attn_mask, positions, cache, keep, lookahead)
        x = x + self.dropout(a)
        return x + self.dropout(self.ff(x)), (None if cache is None else (keys, values, cache[2]))


class TransformerEncoder(ChunkedEncoder):
    """Features [B, T, F] + lengths → encodings [B, T', D] + lengths; padded output frames are zero.

    Chunked attention and streaming come from `ChunkedEncoder`.
    """

    def __init__(self, cfg: TransformerEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk = cfg.chunk
        self.output_dim = cfg.d_model
        self.subsampling = Conv2dSubsampling(cfg.input_dim, cfg.d_model, cfg.subsampling_factor, cfg.subsampling_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.num_heads, cfg.ff_expansion, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def finish(self, x: Tensor) -> Tensor:
        return self.norm(x)


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries [B, L, D] over memory [B, T, M], hiding padded memory frames.

    Weights are computed explicitly (not fused) so the decoder can report where each token looked.
    """

    def __init__(self, d_model: int, memory_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(memory_dim, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_mask: Tensor, kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """→ (output [B, L, D], weights [B, L, T] averaged over heads); `kv` = self.kv(memory) if precomputed."""
        b, l, d = x.shape
        q = self.q(x).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(memory) if kv is None else kv
        k, v = kv.view(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5  # [B, H, L, T]
        weights = scores.masked_fill(~memory_mask[:, None, None, :], float("-inf")).softmax(-1)
        y = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, l, d)
        return self.out(y), weights.mean(1)


@dataclass
class MochaSettings:
    """The MoChA head of each decoder block when cross = "mocha"."""

    dim: int = 128  # size of the energy functions' hidden layer
    chunk: int = 4  # chunk width w: encoder frames softly attended up to the halt
    init_bias: float = -4.0  # initial monotonic energy offset r
    noise: float = 1.0  # std of the Gaussian noise on the monotonic energies in training


class MonotonicCrossAttention(nn.Module):
    """One MoChA head (`malsori.nn.mocha`) as a decoder block's cross-attention, its context projected to d_model.

    The alignment is a recurrence over output positions, so it reads one position's query [N, D] at a time:
    `soft` (training: expected attention) or `hard` (inference: the online reader, halting at one frame).
    """

    def __init__(self, d_model: int, memory_dim: int, dim: int, chunk: int, init_bias: float, noise_std: float) -> None:
        super().__init__()
        self.mocha = MonotonicChunkwiseAttention(d_model, memory_dim, dim, chunk, init_bias, noise_std)
        self.out = nn.Linear(memory_dim, d_model)

    def key(self, memory: Tensor) -> Tensor:
        """memory [N, T, M] → the head's projected keys [N, T, 2A], computed once per utterance."""
        return self.mocha.key(memory)

    def soft(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, log_alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """→ (output [N, D], β [N, T], log α [N, T] float64) of the expected attention, given log α of the previous position."""
        context, beta, log_alpha = self.mocha.soft(query, keys, memory, mask, log_alpha)
        return self.out(context), beta, log_alpha

    def hard(self, query: Tensor, keys: Tensor, memory: Tensor, lens: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """→ (output [N, D], chunk weights [N, T], halt [N] (`lens` = ran past the end), found [N]), scanning from `prev`."""
        context, weights, index, found = self.mocha.hard(query, keys, memory, lens, prev)
        return self.out(context), weights, index, found


class DecoderBlock(nn.Module):
    """x + causal MHSA(LN(x)) → x + CrossAttention(LN(x), memory) → x + FFN(LN(x)).

    `cross` picks the cross-attention: "full" (multi-head softmax over all frames) or "mocha" (one monotonic
    chunkwise head, `MonotonicCrossAttention`; the decoder then runs the three parts itself, position by position).
    """

    def __init__(self, d_model: int, memory_dim: int, num_heads: int, ff_expansion: int, dropout: float, attention_dropout: float,
                 cross: Literal["full", "mocha"] = "full", mocha: MochaSettings | None = None) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadSelfAttention(d_model, num_heads, attention_dropout)
        self.norm_cross = nn.LayerNorm(d_model)
        if cross == "full":
            self.cross_attention: nn.Module = CrossAttention(d_model, memory_dim, num_heads, attention_dropout)
        elif cross == "mocha":
            m = mocha or MochaSettings()
            self.cross_attention = MonotonicCrossAttention(d_model, memory_dim, m.dim, m.chunk, m.init_bias, m.noise)
        else:
            raise ValueError(f"unknown cross-attention {cross!r} (known: full, mocha)")
        self.ff = FeedForward(d_model, ff_expansion, dropout)
        self.dropout = nn.Dropout(dropout)

    def attend_self(self, x: Tensor, mask: Tensor, causal: Tensor) -> Tensor:
        """The causal self-attention branch: x + MHSA(LN(x))."""
        return x + self.dropout(self.self_attention(self.norm_self(x), mask, causal))

    def attend_self_cached(self, x: Tensor, position: int, keys: Tensor, values: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The self-attention branch for one new position x [N, 1, D] at `position`, over the keys and values
        [N, H, P, dh] of the earlier positions → (x + MHSA(LN(x)), (keys, values) with this position appended)."""
        positions = torch.full((1,), position, dtype=torch.long, device=x.device)
        y, keys, values = self.self_attention.forward_cached(self.norm_self(x), positions, keys, values)
        return x + self.dropout(y), (keys, values)

    def finish(self, x: Tensor, cross: Tensor) -> Tensor:
        """Add the cross-attention output, then the feed-forward branch."""
        x = x + self.dropout(cross)
        return x + self.dropout(self.ff(x))

    def forward(self, x: Tensor, mask: Tensor, causal: Tensor, memory: Tensor, memory_mask: Tensor,
                memory_kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The full-attention block: → (x, cross-attention weights [B, L, T] averaged over heads)."""
        x = self.attend_self(x, mask, causal)
        y, weights = self.cross_attention(self.norm_cross(x), memory, memory_mask, memory_kv)
        return self.finish(x, y), weights


class TransformerDecoder(nn.Module):
    """Token embedding → N pre-LN decoder blocks → LayerNorm → output projection (an attention decoder).

    `step` runs only the newest position: every block's self-attention keys/values of the earlier positions are
    cached in the state, "self_kv" [N, layers, 2, H, P, dh] (P = positions read so far), so a step costs O(prefix)
    rather than recomputing the prefix; `select_state` reorders the cache with the beam like any other entry.

    cross = "full": the state keeps the memory's cross-attention keys/values "memory_kv" [N, layers, T, 2D]
    (projected once per utterance, the costliest part to redo) and "attn" [N, T], the last block's
    cross-attention of the newest position (for token times).

    cross = "mocha" (streamable; Chiu & Raffel, 2018, one monotonic head per block as in monotonic multihead
    attention, Ma et al., 2020): each block's head reads the memory left to right over the output positions.
    Training uses the expected (soft) alignment, a recurrence over positions computed with a loop; in eval mode
    `forward` and `step` use the hard online reader, so the searches score what is decoded. The state keeps the
    projected keys "keys" [N, layers, T, 2A], the halts "index" [N, layers] (memory length = ran past the end;
    "alpha" [N, layers, T], log α, when made in training mode), "attn" [N, T] (the last block's weights of the
    newest position) and "frame" [N], the last block's halt (the token's frame).
    """

    def __init__(self, vocab_size: int, memory_dim: int, d_model: int = 256, num_layers: int = 6, num_heads: int = 4,
                 ff_expansion: int = 4, dropout: float = 0.1, attention_dropout: float = 0.1,
                 cross: Literal["full", "mocha"] = "full", mocha: MochaSettings | None = None) -> None:
        super().__init__()
        self.cross, self.d_model = cross, d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.scale = d_model**0.5
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, memory_dim, num_heads, ff_expansion, dropout, attention_dropout, cross, mocha)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def _masks(self, ys: Tensor, ys_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """→ (embedded tokens [N, L, D], padding mask [N, L], causal mask [L, L])."""
        l = ys.size(1)
        causal = torch.ones(l, l, dtype=torch.bool, device=ys.device).tril()
        return self.dropout(self.embed(ys) * self.scale), length_mask(ys_lens, l), causal

    def _run(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor,
             memory_kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Full cross-attention → (logits [B, L, V], every block's cross-attention weights [B, layers, L, T])."""
        x, mask, causal = self._masks(ys_in, ys_in_lens)
        memory_mask = length_mask(memory_lens, memory.size(1))
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, mask, causal, memory, memory_mask, None if memory_kv is None else memory_kv[:, i])
            weights.append(w)
        return self.output(self.norm(x)), torch.stack(weights, 1)

    def _run_monotonic(self, memory: Tensor, memory_lens: Tensor, ys: Tensor, ys_lens: Tensor,
                       state: dict) -> tuple[Tensor, Tensor, dict]:
        """MoChA cross-attention over all of ys [N, L] from `init_state` (teacher forcing) → (logits [N, L, V], weights
        [N, layers, L, T], state after position L − 1)."""
        x, mask, causal = self._masks(ys, ys_lens)
        weights, readers = [], []
        for j, layer in enumerate(self.layers):
            x = layer.attend_self(x, mask, causal)
            x, w, reader = self._monotonic_cross(layer, j, x, state, memory, memory_lens)
            weights.append(w)
            readers.append(reader)
        return self.output(self.norm(x)), torch.stack(weights, 1), self._monotonic_state(state, weights, readers, memory_lens)

    def _monotonic_cross(self, layer: DecoderBlock, j: int, x: Tensor, state: dict, memory: Tensor,
                         memory_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Block j's MoChA cross-attention and feed-forward for the positions of x [N, L', D], its reader starting
        from `state` → (x, weights [N, L', T], the reader after the last position)."""
        soft = self.training
        if soft and "alpha" not in state:
            raise RuntimeError("MoChA decoder state made in eval mode used in training mode")
        query, keys = layer.norm_cross(x), state["keys"][:, j]
        reader = state["alpha"][:, j] if soft else state["index"][:, j]
        memory_mask = length_mask(memory_lens, memory.size(1))
        outs, ws = [], []
        for i in range(x.size(1)):
            if soft:
                y, w, reader = layer.cross_attention.soft(query[:, i], keys, memory, memory_mask, reader)
            else:
                y, w, reader, _ = layer.cross_attention.hard(query[:, i], keys, memory, memory_lens, reader)
            outs.append(y[:, None])
            ws.append(w)
        return layer.finish(x, torch.cat(outs, 1)), torch.stack(ws, 1), reader

    def _monotonic_state(self, state: dict, weights: list[Tensor], readers: list[Tensor], memory_lens: Tensor) -> dict:
        """The state after a MoChA run: every block's reader, the last block's weights and halt of the newest position."""
        new = {**state, "attn": weights[-1][:, -1]}
        if self.training:
            new["alpha"] = torch.stack(readers, 1)
            new["frame"] = new["alpha"][:, -1].argmax(-1)
        else:
            new["index"] = torch.stack(readers, 1)
            new["frame"] = torch.minimum(new["index"][:, -1], (memory_lens - 1).clamp(min=0))
        return new

    def forward(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> Tensor:
        """Teacher forcing: memory [B, T, D], ys_in [B, L] (sos + tokens, 0-padded) → logits [B, L, V]."""
        return self.alignments(memory, memory_lens, ys_in, ys_in_lens)[0]

    def alignments(self, memory: Tensor, memory_lens: Tensor, ys_in: Tensor, ys_in_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing → (logits [B, L, V], every block's cross-attention weights [B, layers, L, T]): softmax
        averaged over heads (full), MoChA's expected chunk attention β (training) or hard chunk weights (eval)."""
        if self.cross == "mocha":
            logits, weights, _ = self._run_monotonic(memory, memory_lens, ys_in, ys_in_lens,
                                                     self.init_state(memory, memory_lens))
            return logits, weights
        return self._run(memory, memory_lens, ys_in, ys_in_lens)

    def init_state(self, memory: Tensor, memory_lens: Tensor) -> dict[str, Tensor | None]:
        n, t, _ = memory.shape
        empty = empty_cache(self.layers[0].self_attention, n, len(self.layers), memory.device, memory.dtype)
        if self.cross == "full":
            kv = torch.stack([layer.cross_attention.kv(memory) for layer in self.layers], dim=1)
            return {"memory_kv": kv, "attn": None, "self_kv": empty}
        layers = len(self.layers)
        state = {"keys": torch.stack([layer.cross_attention.key(memory) for layer in self.layers], dim=1),
                 "index": memory_lens.new_zeros(n, layers), "frame": memory_lens.new_zeros(n), "attn": None,
                 "self_kv": empty}
        if self.training:
            state["alpha"] = initial_alignment(n * layers, t, memory.device).view(n, layers, t)
        return state

    def step(self, ys: Tensor, state: dict, memory: Tensor, memory_lens: Tensor) -> tuple[Tensor, dict]:
        """ys [N, L] prefixes, all of length L, state of the step on ys[:, :-1] (or from init_state when L = 1) →
        (next-token log-probs [N, V], state). Only the newest token ys[:, -1] is run; the earlier ones are cached."""
        position, cache = ys.size(1) - 1, state["self_kv"]
        if cache.size(4) != position:
            raise ValueError(f"decoder state holds {cache.size(4)} positions, prefixes have {ys.size(1)} tokens")
        x = self.dropout(self.embed(ys[:, -1:]) * self.scale)
        memory_mask = length_mask(memory_lens, memory.size(1))
        caches, weights, readers = [], [], []
        for j, layer in enumerate(self.layers):
            x, kv = layer.attend_self_cached(x, position, *block_cache(cache, j))
            caches.append(kv)
            if self.cross == "mocha":
                x, w, reader = self._monotonic_cross(layer, j, x, state, memory, memory_lens)
                readers.append(reader)
            else:
                y, w = layer.cross_attention(layer.norm_cross(x), memory, memory_mask, state["memory_kv"][:, j])
                x = layer.finish(x, y)
            weights.append(w)
        log_probs = F.log_softmax(self.output(self.norm(x))[:, -1].float(), dim=-1)
        if self.cross == "mocha":
            new = self._monotonic_state(state, weights, readers, memory_lens)
        else:
            new = {"memory_kv": state["memory_kv"], "attn": weights[-1][:, -1]}
        return log_probs, {**new, "self_kv": stack_cache(caches)}

    def select_state(self, state: dict, index: Tensor) -> dict:
        return select_state(state, index)
