"""Chunk-wise self-attention encoders: chunk masks for training and `forward_chunk` for streaming.

A chunked encoder splits its (subsampled) frames into chunks of `chunk_size`; a frame attends to every frame of
its own chunk and of the `left_chunks` chunks before it, and to at most `right_context` frames after its chunk (the
look-ahead). Streaming then needs
only a bounded state carried from chunk to chunk — the far past survives as the cached keys/values of each layer
(a fixed budget of left_chunks × chunk_size frames) and as the last inputs of each causal convolution — so the cost
per chunk does not grow with the length of the stream, and chunk-by-chunk outputs equal the full-utterance forward
under the same chunk mask (tests/test_streaming_encoder.py).

Training with `dynamic_chunk` samples a chunk size (and left context) per batch, so one model serves several
latencies chosen at inference time (Zhang et al., 2020, "Unified streaming and non-streaming two-pass ASR").

Look-ahead is done as in Emformer (Shi et al., 2021): every layer processes the chunk together with a *copy* of the
next `right_context` frames, whose outputs are thrown away after the last layer. A chunk's look-ahead frames
therefore see exactly what they see in streaming (their chunk, its left context and themselves) and the receptive
field does not grow with depth; the full forward appends all copies after the utterance (`LookAhead`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from malsori.config import bounded
from malsori.nn.attention import MultiHeadSelfAttention
from malsori.nn.mask import length_mask


@dataclass
class ChunkConfig:
    """How an encoder limits self-attention to chunks (training) and what streaming it supports."""

    causal: bool = False  # causal convolutions (Conformer conv module sees only past frames); needed to stream exactly
    chunk_size: int = bounded(0, ge=0)  # training chunk in encoder frames (after subsampling); 0 = full context
    dynamic_chunk: bool = False  # training: per batch, full context half the time, else a chunk in [1, max_dynamic_chunk]
    max_dynamic_chunk: int = bounded(25, ge=1)  # largest sampled chunk in encoder frames (25 × 40 ms = 1 s)
    max_dynamic_left: int = bounded(-1, ge=-1)  # training: left context in chunks sampled in [0, this] per batch; -1 = all the past
    right_context: int = bounded(0, ge=0)  # training look-ahead in encoder frames after each chunk (dynamic: sampled in [0, this])


@dataclass
class LookAhead:
    """Where the look-ahead copies sit in a layer's input [chunk frames ; copies] (Emformer-style right context).

    Positions count from the first chunk frame of the input; a copy is a frame at or after its chunk's end.
    """

    frames: int  # n: the input starts with n chunk frames; every frame after them is a look-ahead copy
    position: Tensor  # [N] long: position of each copy (which frame it copies)
    chunk_end: Tensor  # [N] long: end (exclusive position) of the chunk whose look-ahead the copy belongs to

    @property
    def copies(self) -> int:
        return self.position.numel()

    @staticmethod
    def for_utterance(length: int, chunk_size: int, right: int, device: torch.device | None = None) -> "LookAhead":
        """Copies of frames [(c+1)·S, (c+1)·S + right) ∩ [0, length) for every chunk c of size S."""
        ends = torch.arange(chunk_size, max(length, chunk_size), chunk_size, device=device)  # none when one chunk holds all
        pos = (ends[:, None] + torch.arange(right, device=device)[None, :]).flatten()
        end = ends.repeat_interleave(right)
        keep = pos < length
        return LookAhead(length, pos[keep], end[keep])

    @staticmethod
    def for_chunk(frames: int, right: int, device: torch.device | None = None) -> "LookAhead":
        """Streaming: one chunk of `frames` frames followed by its `right` look-ahead frames."""
        pos = torch.arange(frames, frames + right, device=device)
        return LookAhead(frames, pos, torch.full_like(pos, frames))

    def attention_mask(self, chunk_size: int, left_chunks: int) -> Tensor:
        """[n+N, n+N] (query, key) True = may attend: a chunk frame or copy sees its chunk, `left_chunks` chunks
        before it and its chunk's copies; never another chunk's copies."""
        device = self.position.device
        chunk = torch.cat((torch.arange(self.frames, device=device), self.chunk_end - 1)) // chunk_size
        is_copy = torch.arange(chunk.numel(), device=device) >= self.frames
        q, k = chunk[:, None], chunk[None, :]
        past = (k <= q) & ~is_copy[None, :]
        if left_chunks >= 0:
            past &= k >= q - left_chunks
        return past | ((k == q) & is_copy[None, :])

    def conv_windows(self, kernel: int) -> Tensor:
        """[N, kernel] indices into [K-1 past frames ; n chunk frames ; N copies] of each copy's causal conv window:
        frames before its chunk's end come from the chunk (or the past), later ones from the copies."""
        pos = self.position[:, None] - (kernel - 1) + torch.arange(kernel, device=self.position.device)[None, :]
        own = torch.arange(self.copies, device=pos.device)[:, None] - (self.position[:, None] - pos)
        return torch.where(pos < self.chunk_end[:, None], kernel - 1 + pos, kernel - 1 + self.frames + own)


def block_attention(
    attention: MultiHeadSelfAttention, h: Tensor, mask: Tensor | None, attn_mask: Tensor | None, positions: Tensor | None,
    cache: tuple[Tensor, ...] | None, keep: int, lookahead: LookAhead | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The self-attention branch of a chunked encoder's block over its normed input h [B, T, D]: the full `attention`
    without a cache, else one streaming chunk over the cached keys/values cache[0], cache[1] (the look-ahead copies at
    the end of h kept out of the new cache, `keep` frames kept) → (output, keys, values; None, None without a cache)."""
    if cache is None:
        return attention(h, mask, attn_mask, positions), None, None
    uncached = lookahead.copies if lookahead is not None else 0
    return attention.forward_cached(h, positions, cache[0], cache[1], keep, uncached, attn_mask)


def chunk_mask(length: int, chunk_size: int, left_chunks: int = -1, device: torch.device | None = None) -> Tensor:
    """[T, T] bool (query, key): True where the key lies in the query's chunk or in its `left_chunks` chunks before.

    chunk_size <= 0 gives full context; left_chunks < 0 gives all the past.
    """
    if chunk_size <= 0:
        return torch.ones(length, length, dtype=torch.bool, device=device)
    return LookAhead.for_utterance(length, chunk_size, 0, device).attention_mask(chunk_size, left_chunks)


@dataclass
class EncoderState:
    """Everything a chunked encoder carries between chunks; plain tensors only (export-friendly).

    B = batch, F = feature bins, D = model width, H heads × dh head dim, L ≤ left_chunks × chunk_size cached frames.
    """

    feats: Tensor  # [B, n, F] input frames not yet consumed by the subsampling convs
    frames: Tensor  # [B, m, D] subsampled frames waiting for a full chunk and its look-ahead
    offset: Tensor  # [] long: encoder frames emitted so far = position of the next frame
    keys: Tensor  # [layers, B, H, L, dh] rotated self-attention keys of the last L frames of every layer
    values: Tensor  # [layers, B, H, L, dh] their values
    conv: Tensor  # [layers, B, D, K-1] last inputs of every causal depthwise conv (K-1 = 0 without a conv module)


class ChunkedEncoder(nn.Module):
    """Base of the Conformer and Transformer encoders: subsampling → blocks, with chunked attention and streaming.

    Subclasses set `self.subsampling`, `self.dropout`, `self.layers` (blocks with
    `forward(x, mask, attn_mask, positions, cache, keep) -> (x, cache)`), `self.chunk` (ChunkConfig) and
    `self.conv_context` (K-1 frames of causal conv state, 0 if none); `finish(x)` is applied after the last block.
    """

    subsampling: nn.Module
    layers: nn.ModuleList
    chunk: ChunkConfig
    conv_context: int = 0

    @property
    def subsampling_factor(self) -> int:
        return self.subsampling.subsampling_factor

    def finish(self, x: Tensor) -> Tensor:
        """Applied after the last block (e.g. a final LayerNorm)."""
        return x

    def training_chunking(self) -> tuple[int, int, int]:
        """(chunk_size, left_chunks, right_context) for this forward pass when the caller does not choose: sampled
        per batch when training with dynamic chunks, else the configured chunk (full context for dynamic models in
        eval mode)."""
        c = self.chunk
        if c.dynamic_chunk:
            if not self.training or torch.rand(()) < 0.5:
                return 0, -1, 0
            size = int(torch.randint(1, c.max_dynamic_chunk + 1, ()))
            left = int(torch.randint(0, c.max_dynamic_left + 1, ())) if c.max_dynamic_left >= 0 else -1
            return size, left, int(torch.randint(0, c.right_context + 1, ()))
        return c.chunk_size, -1, c.right_context if c.chunk_size > 0 else 0

    def forward(
        self, feats: Tensor, lengths: Tensor, chunk_size: int | None = None, left_chunks: int = -1, right_context: int = 0
    ) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → (enc [B, T', D], enc_lengths [B]); padded output frames are zero.

        `chunk_size` (encoder frames, 0 = full context), `left_chunks` and `right_context` (look-ahead frames per
        chunk) restrict attention as in streaming; None uses `training_chunking()`.
        """
        if chunk_size is None:
            chunk_size, left_chunks, right_context = self.training_chunking()
        x, lengths = self.subsampling(feats, lengths.to(feats.device))
        t = x.size(1)
        mask = length_mask(lengths, t)
        x = self.dropout(x)
        positions, lookahead, attn_mask, full_mask = None, None, None, mask
        if chunk_size > 0:
            lookahead = LookAhead.for_utterance(t, chunk_size, right_context, x.device)
            attn_mask = lookahead.attention_mask(chunk_size, left_chunks)
        if lookahead is not None and lookahead.copies:
            x = torch.cat((x, x[:, lookahead.position]), dim=1)
            full_mask = torch.cat((mask, mask[:, lookahead.position]), dim=1)
            positions = torch.cat((torch.arange(t, device=x.device), lookahead.position))
        else:
            lookahead = None  # no copies: the layers run as without look-ahead (non-causal convs allowed)
        for layer in self.layers:
            x, _ = layer(x, full_mask, attn_mask, positions, lookahead=lookahead)
        return self.finish(x[:, :t]).masked_fill(~mask[..., None], 0.0), lengths

    def init_state(self, batch: int = 1) -> EncoderState:
        """The state before the first chunk of `batch` streams."""
        p = next(self.parameters())
        layers, d = len(self.layers), self.output_dim
        attention = self.layers[0].attention
        kv = p.new_zeros(layers, batch, attention.num_heads, 0, attention.head_dim)
        return EncoderState(
            feats=p.new_zeros(batch, 0, self.subsampling.input_dim),
            frames=p.new_zeros(batch, 0, d),
            offset=torch.zeros((), dtype=torch.long),
            keys=kv,
            values=kv.clone(),
            conv=p.new_zeros(layers, batch, d, self.conv_context),
        )

    def check_streamable(self) -> None:
        """Raise ConfigError if chunk-by-chunk outputs could not equal the masked full forward (e.g. look-ahead convs)."""

    @torch.no_grad()
    def forward_chunk(
        self, feats: Tensor, state: EncoderState | None, chunk_size: int, left_chunks: int = -1, final: bool = False,
        right_context: int = 0,
    ) -> tuple[Tensor, EncoderState]:
        """Stream: feats [B, n, F] (any n ≥ 0, the next input frames) → (encodings [B, n', D], new state).

        Emits every chunk of `chunk_size` encoder frames whose `right_context` look-ahead frames have arrived;
        `final=True` (end of stream) also emits the rest. Outputs equal
        `forward(..., chunk_size, left_chunks, right_context)` on the whole input. `left_chunks` < 0 keeps all the
        past (the state then grows with the stream).
        """
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be >= 1 encoder frame to stream, got {chunk_size}")
        self.check_streamable()
        state = self.init_state(feats.size(0)) if state is None else state
        buf = torch.cat((state.feats, feats.to(state.feats)), dim=1)
        new_frames = buf.new_zeros(buf.size(0), 0, self.output_dim)
        n_out = int(self.subsampling.output_lengths(torch.tensor(buf.size(1))))
        if n_out > 0:
            sub, _ = self.subsampling(buf, torch.full((buf.size(0),), buf.size(1)))
            new_frames = sub[:, :n_out]
            buf = buf[:, n_out * self.subsampling_factor :]
        frames = torch.cat((state.frames, new_frames), dim=1)
        keep = left_chunks * chunk_size if left_chunks >= 0 else -1
        outputs, offset, start = [], int(state.offset), 0
        keys, values, conv = list(state.keys.unbind(0)), list(state.values.unbind(0)), list(state.conv.unbind(0))
        while start < frames.size(1) and (final or start + chunk_size + right_context <= frames.size(1)):
            x = frames[:, start : start + chunk_size + right_context]
            n = min(chunk_size, x.size(1))
            lookahead = LookAhead.for_chunk(n, x.size(1) - n, x.device) if x.size(1) > n else None
            positions = torch.arange(offset, offset + x.size(1), device=x.device)
            for i, layer in enumerate(self.layers):
                x, (keys[i], values[i], conv[i]) = layer(
                    x, positions=positions, cache=(keys[i], values[i], conv[i]), keep=keep, lookahead=lookahead
                )
            outputs.append(self.finish(x[:, :n]))
            offset, start = offset + n, start + n
        enc = torch.cat(outputs, dim=1) if outputs else new_frames[:, :0]
        new_state = EncoderState(
            feats=buf,
            frames=frames[:, start:],
            offset=torch.tensor(offset),
            keys=torch.stack(keys),
            values=torch.stack(values),
            conv=torch.stack(conv),
        )
        return enc, new_state
