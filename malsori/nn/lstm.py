"""(Bi)LSTM encoder with time reduction: frame stacking before the first layer, or a pyramid as in LAS.

Layers run on packed sequences, so padding never reaches the recurrence; frames past an utterance's end are set
to zero before every stacking/pairing step, so a padded batch gives exactly the frames of one-at-a-time runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.nn.mask import length_mask


@dataclass
class LSTMConfig:
    """Sizes of an LSTM encoder; the defaults give ~5.9M parameters (BiLSTM, 4 layers, ×4 stacking)."""

    input_dim: int = bounded(80, ge=1)  # feature bins per input frame (log-mel); build_model sets it from the features
    hidden_size: int = bounded(256, ge=1)  # LSTM cells per direction
    num_layers: int = bounded(4, ge=1)  # stacked LSTM layers
    bidirectional: bool = True  # BiLSTM (offline) or forward-only LSTM (streamable)
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout between layers and on the output
    reduction: Literal["stack", "pyramid", "none"] = "stack"  # stack frames before layer 1, or pair them between layers
    reduction_factor: int = bounded(4, ge=1)  # total time reduction, a power of 2 for "pyramid" (at most 2^(num_layers-1))
    projection: int = bounded(0, ge=0)  # if > 0, a linear map to this size after every layer (smaller next-layer inputs)

    def __post_init__(self) -> None:
        k = self.reduction_factor
        if self.reduction == "pyramid" and (k & (k - 1) or k.bit_length() - 1 > self.num_layers - 1):
            raise ConfigError(f"reduction_factor {k} does not fit reduction 'pyramid' with {self.num_layers} layers "
                              "(a power of 2, at most 2^(num_layers-1))")


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """[B, T, D] → [B, ceil(T/k), k·D] by concatenating k consecutive frames; frames past `lengths` count as zeros."""
    b, t, d = x.shape
    x = x.masked_fill(~length_mask(lengths, t)[..., None], 0.0)
    t_out = math.ceil(t / k)
    x = nn.functional.pad(x, (0, 0, 0, t_out * k - t))
    return x.reshape(b, t_out, k * d), (lengths + k - 1) // k


class LSTMEncoder(nn.Module):
    """Features [B, T, F] + lengths → encodings [B, T', D] + lengths, T' = ceil(T / reduction_factor).

    With `bidirectional` and no projection, channels are [forward; backward] (`bidirectional_output` is True):
    the fixed-vector decoder then summarizes an utterance by the last forward and first backward state.
    """

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k = cfg.reduction_factor if cfg.reduction != "none" else 1
        self.stack = k if cfg.reduction == "stack" else 1
        # pyramid: pairs of frames are concatenated before layers 1 .. log2(k) (0-based), as in LAS
        self.pairs_before = set(range(1, k.bit_length())) if cfg.reduction == "pyramid" else set()
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        out = cfg.projection or width
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleList()
        in_dim = cfg.input_dim * self.stack
        for i in range(cfg.num_layers):
            in_dim *= 2 if i in self.pairs_before else 1
            self.layers.append(nn.LSTM(in_dim, cfg.hidden_size, batch_first=True, bidirectional=cfg.bidirectional))
            self.projections.append(nn.Linear(width, out) if cfg.projection else nn.Identity())
            in_dim = out
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_dim = out
        self.subsampling_factor = k
        self.bidirectional_output = cfg.bidirectional and not cfg.projection

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Encoder frames for inputs of `lengths` frames."""
        lengths = (lengths + self.stack - 1) // self.stack
        for _ in self.pairs_before:
            lengths = (lengths + 1) // 2
        return lengths

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → (enc [B, T', D], enc_lengths [B]); padded output frames are zero."""
        x = feats
        if self.stack > 1:
            x, lengths = stack_frames(x, lengths, self.stack)
        for i, (lstm, proj) in enumerate(zip(self.layers, self.projections)):
            if i in self.pairs_before:
                x, lengths = stack_frames(x, lengths, 2)
            if i > 0:
                x = self.dropout(x)
            t = x.size(1)
            packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=t)
            x = proj(x)
        x = self.dropout(x)
        return x.masked_fill(~length_mask(lengths, x.size(1))[..., None], 0.0), lengths
