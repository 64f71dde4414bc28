"""The feature front-end of an exported model: sherpa-onnx computes kaldi fbank itself, so an exported graph starts
from its features, and malsori's global CMVN (and any difference in waveform scale) is folded into the graph.

sherpa-onnx's fbank (kaldi-native-fbank) is fixed apart from the number of bins and the sample rate: 25 ms Povey
windows every 10 ms, pre-emphasis 0.97, DC offset removed, FFT size rounded up to a power of two,
snip_edges=false, mel filters from 20 Hz to Nyquist - 400 Hz, log energies floored at FLT_EPSILON. WeNet CTC models
get samples × 32768 (16-bit values), the other kinds samples in [-1, 1]. A malsori model trained with another
front-end cannot be reproduced there, and export refuses it (`check_frontend`).
"""

from __future__ import annotations

import math
from dataclasses import fields

import torch
from torch import Tensor, nn

from malsori.errors import MalsoriError
from malsori.features import FLT_EPSILON, FbankConfig, GlobalCMVN

# What sherpa-onnx's kaldi fbank fixes (every FbankConfig field but sample_rate, num_mel_bins, dither, input_scale).
SHERPA_FBANK = FbankConfig(snip_edges=False, low_freq=20.0, high_freq=-400.0, dither=0.0)
FREE_FIELDS = ("sample_rate", "num_mel_bins", "dither", "input_scale")  # passed to sherpa-onnx, noise, or folded
WENET_SCALE = 32768.0  # sherpa-onnx scales samples by this for WeNet CTC models (normalize_samples=false)
UNIT_SCALE = 1.0  # ... and leaves them in [-1, 1] for transducers


def check_frontend(cfg: FbankConfig, where: str) -> None:
    """MalsoriError (one line, naming `where` and every differing field) unless sherpa-onnx's fbank reproduces `cfg`."""
    wrong = [f"{f.name}={getattr(cfg, f.name)!r} (sherpa-onnx: {getattr(SHERPA_FBANK, f.name)!r})"
             for f in fields(FbankConfig) if f.name not in FREE_FIELDS and getattr(cfg, f.name) != getattr(SHERPA_FBANK, f.name)]
    if wrong:
        raise MalsoriError(f"{where}: features {', '.join(wrong)}: sherpa-onnx computes its own features and cannot reproduce "
                           f"this model's front-end; train with features: {{snip_edges: false, low_freq: 20, high_freq: -400}}")


def check_scale(cfg: FbankConfig, runtime_scale: float, where: str, layout: str) -> None:
    """MalsoriError unless features at `runtime_scale` determine this model's (its input_scale is not larger)."""
    if cfg.input_scale > runtime_scale:
        raise MalsoriError(f"{where}: features.input_scale is {cfg.input_scale:g}, but sherpa-onnx feeds the {layout} "
                           f"samples × {runtime_scale:g}, and its log floor then clips quiet bins this model saw above it; "
                           f"train with features.input_scale <= {runtime_scale:g} (1.0 suits every layout)")


class FoldedFrontEnd(nn.Module):
    """sherpa-onnx's fbank frames [N, T, F] at `runtime_scale` → the normalized features malsori's model was trained on.

    log mel(x / s) = log mel(x) - 2 ln s, and both are floored at log FLT_EPSILON: for s = runtime_scale / model's
    input_scale >= 1, max(frame - 2 ln s, floor) is exactly the model's frame (the other way round it is not: the
    runtime's floor would have clipped bins the model saw, hence `check_scale`). The CMVN follows.
    """

    def __init__(self, cmvn: GlobalCMVN, model_scale: float, runtime_scale: float) -> None:
        super().__init__()
        if model_scale > runtime_scale:
            raise ValueError(f"model scale {model_scale} > runtime scale {runtime_scale}: not exactly foldable")
        self.shift = 2.0 * math.log(runtime_scale / model_scale)
        self.floor = math.log(FLT_EPSILON)
        self.register_buffer("mean", cmvn.mean.detach().clone().float())
        self.register_buffer("istd", cmvn.istd.detach().clone().float())

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.shift != 0.0:
            x = (x - self.shift).clamp_min(self.floor)
        out = (x - self.mean) * self.istd
        if lengths is not None:  # padded frames are zero, as GlobalCMVN leaves them
            valid = torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]
            out = out * valid[..., None].to(out.dtype)
        return out
