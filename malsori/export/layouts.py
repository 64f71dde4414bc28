"""Export-only modules: a trained malsori model wrapped in the input/output layouts sherpa-onnx's runtimes expect.

- `OfflineCTC`: WeNet CTC (x [N, T, F], x_lens [N] → log_probs [N, T', V], log_probs_lens [N]).
- `StreamingEncoder`: WeNet streaming CTC, batch 1: one chunk of feature frames plus a fixed-size state (attention
  keys and values of the last `required_cache_size` frames of every layer, the causal convolutions' last inputs, the
  stream offset) and a mask over the cache → the chunk's log-probs (for a transducer: its projected encoder frames,
  for the decoder and joiner graphs) and the next state.
- `TransducerEncoder` / `TransducerDecoder` / `TransducerJoiner`: icefall's three-file transducer; the joiner's
  input projections are applied in the encoder and decoder graphs, so the joiner takes two [N, J] vectors.

They reuse the model's own modules; nothing here changes the model, and each wrapper's output equals the
corresponding malsori computation (tests/test_export.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.export.frontend import FoldedFrontEnd


class OfflineCTC(nn.Module):
    """Features (sherpa-onnx's fbank) → CMVN → encoder → CTC log-probs, for a whole padded batch."""

    def __init__(self, model: nn.Module, front: FoldedFrontEnd) -> None:
        super().__init__()
        self.model, self.front = model, front
        self.pad = _receptive_field(model.encoder) - 1  # zero frames appended so a very short input still runs

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        feats = F.pad(self.front(x, x_lens), (0, 0, 0, self.pad))
        log_probs, lens = self.model(feats, x_lens)
        return log_probs, lens.to(torch.int64)


def _receptive_field(encoder: nn.Module) -> int:
    """Input frames the encoder needs for one output frame (its subsampling convs' receptive field; 1 without)."""
    return getattr(getattr(encoder, "subsampling", None), "min_frames", 1)


class _MaskedCache(nn.Module):
    """A layer's attention with the streaming cache mask (True = may attend) applied to its cached forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.mask: Tensor | None = None

    def forward_cached(self, x: Tensor, positions: Tensor, keys: Tensor, values: Tensor, keep: int = -1, uncached: int = 0,
                       attn_mask: Tensor | None = None):
        mask = self.mask if attn_mask is None or self.mask is None else self.mask & attn_mask
        return self.inner.forward_cached(x, positions, keys, values, keep, uncached, attn_mask if mask is None else mask)


class StreamingEncoder(nn.Module):
    """One WeNet streaming step of a causal chunked Conformer (batch 1): CTC log-probs for a CTC model, the joiner's
    encoder projection for a transducer.

    x [1, (C-1)·s + r + 1, F] feature frames giving C encoder frames (s = subsampling factor, r + 1 = its receptive
    field); offset [1]: `required_cache_size` + encoder frames emitted so far (sherpa-onnx starts it there);
    attn_cache [layers, heads, R, 2·dh] (rotated keys ; values) of the last R = required_cache_size frames;
    conv_cache [layers, 1, D, K-1]; attn_mask [1, 1, R + C] True where the cache holds a real frame (and on the chunk).
    """

    def __init__(self, model: nn.Module, front: FoldedFrontEnd) -> None:
        super().__init__()
        model.encoder.check_streamable()
        self.front = front
        self.encoder = copy.deepcopy(model.encoder)  # its attentions get the cache mask; the caller's model is untouched
        self.transducer = hasattr(model, "joiner")
        self.head = model.joiner.enc_proj if self.transducer else model.head
        for layer in self.encoder.layers:
            layer.attention = _MaskedCache(layer.attention)
        self.head_dim = self.encoder.layers[0].attention.inner.head_dim

    def forward(self, x: Tensor, offset: Tensor, required_cache_size: Tensor, attn_cache: Tensor, conv_cache: Tensor,
                attn_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.front(x)
        h, _ = self.encoder.subsampling(feats, torch.full((1,), x.size(1), dtype=torch.int64))
        start = offset.reshape(()) - required_cache_size.reshape(())
        positions = start + torch.arange(h.size(1), dtype=torch.int64)
        mask = attn_mask.reshape(1, 1, 1, -1).bool()
        keys, convs = [], []
        for i, layer in enumerate(self.encoder.layers):
            layer.attention.mask = mask
            cache = (attn_cache[i : i + 1, :, :, : self.head_dim], attn_cache[i : i + 1, :, :, self.head_dim :], conv_cache[i])
            h, (k, v, conv) = layer(h, positions=positions, cache=cache)
            keep = attn_cache.size(2)
            keys.append(torch.cat((k, v), dim=-1)[:, :, k.size(2) - keep :])
            convs.append(conv)
        out = self.head(self.encoder.finish(h))
        return (out if self.transducer else out.float().log_softmax(-1)), torch.cat(keys, dim=0), torch.stack(convs)


class TransducerEncoder(nn.Module):
    """Features → CMVN → encoder → the joiner's encoder projection: (encoder_out [N, T', J], encoder_out_lens [N])."""

    def __init__(self, model: nn.Module, front: FoldedFrontEnd) -> None:
        super().__init__()
        self.model, self.front = model, front
        self.pad = _receptive_field(model.encoder) - 1

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        feats = F.pad(self.front(x, x_lens), (0, 0, 0, self.pad))
        out, lens = self.model.encoder(feats, x_lens)
        return self.model.joiner.enc_proj(out), lens.to(torch.int64)


class TransducerDecoder(nn.Module):
    """The stateless prediction network on its last `context` labels, y [N, context] → decoder_out [N, J] (projected).

    sherpa-onnx starts a hypothesis from (-1, …, -1, blank); a negative label is the blank malsori starts from."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.predictor, self.proj, self.blank = model.predictor, model.joiner.pred_proj, model.special_ids.blank

    def forward(self, y: Tensor) -> Tensor:
        y = torch.where(y < 0, torch.full_like(y, self.blank), y)
        out, _ = self.predictor.step(y[:, -1], (torch.cat((y[:, :1], y[:, :-1]), dim=1),))  # history = y
        return self.proj(out)


class TransducerJoiner(nn.Module):
    """logit [N, V] from projected encoder_out [N, J] and decoder_out [N, J]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out)
