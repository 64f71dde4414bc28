"""Front-end that shortens the frame sequence with strided 2-D convolutions before the encoder blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (kernel, stride) of each conv layer, per supported time reduction factor.
LAYOUTS: dict[int, tuple[tuple[int, int], ...]] = {
    4: ((3, 2), (3, 2)),
    6: ((3, 2), (5, 3)),
    8: ((3, 2), (3, 2), (3, 2)),
}


class Conv2dSubsampling(nn.Module):
    """Convs over (time, frequency) without padding, ReLU after each, then a linear map to `output_dim`.

    Because the convs are unpadded, an output frame only sees input frames inside the utterance, so padding
    never leaks into real frames; `output_lengths` is exactly the conv arithmetic (L - k) // s + 1 per layer.
    """

    def __init__(self, input_dim: int, output_dim: int, factor: int = 4, channels: int | None = None) -> None:
        super().__init__()
        if factor not in LAYOUTS:
            raise ValueError(f"subsampling factor must be one of {sorted(LAYOUTS)}, got {factor}")
        self.subsampling_factor = factor
        self.input_dim = input_dim
        self.layout = LAYOUTS[factor]
        channels = channels or output_dim
        layers: list[nn.Module] = []
        in_ch, freq = 1, input_dim
        for kernel, stride in self.layout:
            layers += [nn.Conv2d(in_ch, channels, kernel, stride), nn.ReLU()]
            in_ch, freq = channels, (freq - kernel) // stride + 1
        if freq < 1:
            raise ValueError(f"input_dim={input_dim} is too small for {factor}x subsampling")
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * freq, output_dim)
        # Shortest input that yields one output frame.
        self.min_frames = 1
        for kernel, stride in reversed(self.layout):
            self.min_frames = (self.min_frames - 1) * stride + kernel

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Number of output frames for inputs of `lengths` frames (0 when shorter than the receptive field)."""
        for kernel, stride in self.layout:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → [B, T', output_dim], lengths [B]."""
        if feats.size(1) < self.min_frames:  # too short for even one frame: pad so the convs run
            feats = F.pad(feats, (0, 0, 0, self.min_frames - feats.size(1)))
        x = self.conv(feats.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        x = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, self.output_lengths(lengths)
