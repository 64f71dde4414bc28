"""A released model's encoder run once over a set of utterances, and a stand-in encoder that hands those outputs to a
head: trains and decodes transducer / attention heads on en-small's frozen encoder without re-running it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.pretrained import Recognizer


class GivenEncoder(nn.Module):
    """Identity "encoder": forward(enc, lens) returns them, so a head's own loss and searches run on cached outputs."""

    def __init__(self, output_dim: int) -> None:
        super().__init__()
        self.output_dim = output_dim

    def forward(self, enc: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        return enc, lens


@torch.inference_mode()
def encode_waves(rec: Recognizer, waves: list[np.ndarray]) -> tuple[list[Tensor], float]:
    """Each utterance's encoder output [T', D] (one at a time, as a live recognizer would), and the total time."""
    start = time.perf_counter()
    out = [rec.encode(w)[0].float().cpu() for w in waves]
    return out, time.perf_counter() - start


@torch.inference_mode()
def decode_encoded(model: nn.Module, encs: list[Tensor], options: DecodeOptions) -> list[Hypothesis]:
    """The model's own search (`decode`) per utterance on its encoder outputs [T', D], the encoder left unrun."""
    encoder, model.encoder = model.encoder, GivenEncoder(model.encoder.output_dim)
    try:
        return [model.decode(enc[None], torch.tensor([enc.size(0)]), options)[0] for enc in encs]
    finally:
        model.encoder = encoder


def pad_encoded(encs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """[T'_i, D] tensors → padded [B, T', D] and lengths [B]."""
    return pad_sequence(encs, batch_first=True), torch.tensor([e.size(0) for e in encs])


def load_cache(path: Path) -> dict:
    """The cache written by train_heads.py: encoder outputs, target ids, texts, ids."""
    return torch.load(path, weights_only=False)
