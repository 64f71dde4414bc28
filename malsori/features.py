"""Log-mel filterbank features (Kaldi-compatible), a streaming front-end with identical frames, global CMVN and SpecAugment.

All of it is plain PyTorch, batched, and runs on CPU or GPU. With the default `FbankConfig` the features match
Kaldi's `compute-fbank --num-mel-bins=80 --dither=0` on the same 16-bit audio to float32 rounding (checked against
kaldi-native-fbank in tests/test_features.py). Kaldi's optional energy column (--use-energy) is not provided.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from malsori.config import bounded
from malsori.errors import ConfigError

FLT_EPSILON = float(np.finfo(np.float32).eps)  # Kaldi's log floor: log(max(x, FLT_EPSILON))
CPU_CHUNK_FRAMES = 512  # frames processed together on CPU (bounded so intermediates stay in cache)


@dataclass
class FbankConfig:
    """Filterbank options; names and defaults follow Kaldi's `compute-fbank` except where a comment says "deviates"."""

    sample_rate: int = bounded(16000, ge=1000)  # Hz; waves must already be at this rate (malsori.audio.load_audio resamples)
    num_mel_bins: int = bounded(80, ge=1)  # mel bands (deviates: Kaldi's default is 23; 80 is the usual ASR choice)
    frame_length_ms: float = bounded(25.0, gt=0)  # analysis window length
    frame_shift_ms: float = bounded(10.0, gt=0)  # hop between frames (100 frames/s)
    dither: float = bounded(0.0, ge=0)  # std of Gaussian noise added to each frame, in input_scale units (deviates: Kaldi uses 1.0)
    preemphasis: float = bounded(0.97, ge=0, le=1)  # x[i] -= c*x[i-1]; the first sample of a frame uses itself (x[0] -= c*x[0])
    remove_dc_offset: bool = True  # subtract each frame's mean before pre-emphasis
    window: Literal["povey", "hanning", "hamming", "rectangular"] = "povey"  # Kaldi's names; povey = hanning**0.85
    round_to_power_of_two: bool = True  # zero-pad each frame to the next power of two before the FFT (400 → 512)
    snip_edges: bool = True  # True: only frames that fit inside the signal; False: frames centred on k*shift, edges mirrored
    low_freq: float = bounded(20.0, ge=0)  # lowest mel filter edge in Hz
    high_freq: float = bounded(0.0)  # highest mel filter edge in Hz; <= 0 means Nyquist + high_freq (Kaldi's convention)
    use_log_fbank: bool = True  # log mel energies (False: linear mel energies)
    log_floor: float = bounded(FLT_EPSILON, gt=0)  # energies are floored to this before the log (Kaldi: FLT_EPSILON)
    input_scale: float = bounded(32768.0, gt=0)  # waves in [-1, 1] × this = Kaldi's 16-bit sample values (Kaldi has no such option)

    def __post_init__(self) -> None:
        nyquist = 0.5 * self.sample_rate
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not (0.0 <= self.low_freq < high <= nyquist):
            raise ConfigError(f"low_freq/high_freq: need 0 <= low_freq < high_freq <= {nyquist:g} Hz, "
                              f"got low={self.low_freq:g}, high={high:g}")
        length, shift, _ = frame_sizes(self)
        if length < 2 or shift < 1:
            raise ConfigError(f"frame_length_ms/frame_shift_ms: too small for {self.sample_rate} Hz")


def frame_sizes(cfg: FbankConfig) -> tuple[int, int, int]:
    """(window length, hop, FFT size) in samples, computed as Kaldi does (truncating ms × rate)."""
    length = int(cfg.sample_rate * 0.001 * cfg.frame_length_ms)
    shift = int(cfg.sample_rate * 0.001 * cfg.frame_shift_ms)
    n_fft = 1 << (length - 1).bit_length() if cfg.round_to_power_of_two else length
    return length, shift, n_fft


def num_frames(num_samples: int | torch.Tensor, cfg: FbankConfig) -> int | torch.Tensor:
    """Number of feature frames for a signal of `num_samples` samples (int or integer tensor)."""
    length, shift, _ = frame_sizes(cfg)
    if cfg.snip_edges:
        if isinstance(num_samples, torch.Tensor):
            return torch.where(num_samples >= length, (num_samples - length) // shift + 1, 0)
        return (num_samples - length) // shift + 1 if num_samples >= length else 0
    return (num_samples + shift // 2) // shift


def first_sample(frame: int | torch.Tensor, cfg: FbankConfig) -> int | torch.Tensor:
    """Index of the first sample of frame `frame` (negative for the first frames when snip_edges=False)."""
    length, shift, _ = frame_sizes(cfg)
    return frame * shift if cfg.snip_edges else frame * shift + shift // 2 - length // 2


def _mirror(pos: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Map sample positions outside [0, n) back inside by mirroring at both ends (Kaldi: -1 → 0, n → n-1), repeatedly."""
    n = n.clamp_min(1)
    m = torch.remainder(pos, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


def window_function(cfg: FbankConfig) -> torch.Tensor:
    """The analysis window as Kaldi defines it (symmetric: cos(2πi/(L-1)), i < L), float32."""
    length = frame_sizes(cfg)[0]
    a = 2 * math.pi / (length - 1) if length > 1 else 0.0
    hanning = 0.5 - 0.5 * torch.cos(a * torch.arange(length, dtype=torch.float64))
    shapes = {
        "hanning": hanning,
        "povey": hanning.pow(0.85),
        "hamming": 0.54 - 0.46 * torch.cos(a * torch.arange(length, dtype=torch.float64)),
        "rectangular": torch.ones(length, dtype=torch.float64),
    }
    if cfg.window not in shapes:
        raise ConfigError(f"fbank.window: must be one of {sorted(shapes)}, got {cfg.window!r}")
    return shapes[cfg.window].float()


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Hz → mel, Kaldi/HTK formula 1127 ln(1 + f/700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def mel_filterbank(cfg: FbankConfig) -> torch.Tensor:
    """[n_fft//2 + 1, num_mel_bins] weights: triangles equally spaced on the mel scale, Kaldi's construction.

    Weights are computed from each FFT bin's mel value (triangles are linear in mel, not in Hz); the Nyquist bin gets
    weight 0 as in Kaldi, which only uses bins 0 … n_fft/2 - 1.
    """
    _, _, n_fft = frame_sizes(cfg)
    nyquist = 0.5 * cfg.sample_rate
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low, mel_high = mel_scale(cfg.low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(cfg.num_mel_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    mel = mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (cfg.sample_rate / n_fft))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where(mel <= center, up, down)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros(()))
    return torch.cat([weights, torch.zeros(1, cfg.num_mel_bins, dtype=torch.float64)]).float()


class Fbank(nn.Module):
    """Batched log-mel filterbank: waves [B, S] in [-1, 1] + lengths → features [B, T, F] + frame counts.

    Frames past an utterance's own length are zero, and an utterance's frames do not depend on how the batch is padded.
    The window and mel matrix are non-persistent buffers (derived from the config, so not saved in state_dict).
    """

    def __init__(self, cfg: FbankConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FbankConfig()
        self.frame_length, self.frame_shift, self.n_fft = frame_sizes(cfg)
        self.register_buffer("window", window_function(cfg), persistent=False)
        self.register_buffer("mel_weights", mel_filterbank(cfg) * cfg.input_scale**2, persistent=False)  # × scale²

    @property
    def dim(self) -> int:
        return self.cfg.num_mel_bins

    def frames_to_features(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw frames [..., frame_length] (waves scale) → features [..., num_mel_bins], Kaldi's per-frame recipe.

        Dither, remove the frame's mean, pre-emphasize, window, zero-pad, |rfft|², mel-weight, log; arranged for few
        passes over memory: the mean is removed after pre-emphasis as (1 - c)·mean (the same linear map), and
        input_scale is folded into the mel weights as input_scale² (exact when it is a power of two).
        """
        cfg, length, c = self.cfg, self.frame_length, self.cfg.preemphasis
        if cfg.dither > 0:
            device = generator.device if generator is not None else frames.device
            noise = torch.randn(frames.shape, generator=generator, device=device).to(frames.device)
            frames = frames + noise * (cfg.dither / cfg.input_scale)
        padded = frames.new_empty(*frames.shape[:-1], self.n_fft)
        padded[..., length:] = 0
        x = padded[..., :length]
        torch.sub(frames[..., 1:], frames[..., :-1], alpha=c, out=x[..., 1:])  # x[i] - c·x[i-1]
        torch.mul(frames[..., :1], 1 - c, out=x[..., :1])  # the first sample uses itself
        if cfg.remove_dc_offset:
            x.sub_(frames.mean(dim=-1, keepdim=True) * (1 - c))
        x.mul_(self.window)
        spectrum = torch.fft.rfft(padded)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = power @ self.mel_weights
        return mel.clamp_min_(cfg.log_floor).log_() if cfg.use_log_fbank else mel

    def forward(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """waves [B, S] float, lengths [B] samples (default: all S) → (feats [B, T, F], feat_lengths [B] int64)."""
        if waves.dim() != 2:
            raise ValueError(f"Fbank expects waves [B, S], got shape {tuple(waves.shape)}")
        waves = waves.to(self.window.dtype)
        batch, width = waves.shape
        if lengths is None:
            lengths = torch.full((batch,), width, dtype=torch.long, device=waves.device)
        lengths = lengths.to(device=waves.device, dtype=torch.long)
        if batch and int(lengths.max()) > width:
            raise ValueError(f"Fbank: a length ({int(lengths.max())}) exceeds the padded width {width}")
        feat_lengths = num_frames(lengths, self.cfg)
        frames_max = int(feat_lengths.max()) if batch else 0
        if frames_max == 0:
            return waves.new_zeros(batch, 0, self.dim), feat_lengths
        span = (frames_max - 1) * self.frame_shift + self.frame_length
        if self.cfg.snip_edges:
            source = waves[:, :span]
        else:
            source = self._mirror_edges(waves, lengths)[:, :span]
        frames = source.unfold(1, self.frame_length, self.frame_shift)  # [B, T, frame_length], a view
        # On CPU, ~CPU_CHUNK_FRAMES frames at a time keep the padded frames and spectra in cache (several times faster
        # than one pass over a whole batch); a GPU takes the batch in one go.
        step = max(1, CPU_CHUNK_FRAMES // batch) if waves.device.type == "cpu" else frames_max
        feats = waves.new_empty(batch, frames_max, self.dim)
        for t in range(0, frames_max, step):
            feats[:, t : t + step] = self.frames_to_features(frames[:, t : t + step], generator)
        valid = torch.arange(frames_max, device=waves.device)[None, :] < feat_lengths[:, None]
        return feats.masked_fill_(~valid[..., None], 0.0), feat_lengths

    def _mirror_edges(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """snip_edges=False: a copy starting at frame 0's first sample, each utterance mirrored at its own ends."""
        batch, width = waves.shape
        left = max(0, -int(first_sample(0, self.cfg)))
        right = self.frame_length
        out = waves.new_zeros(batch, left + width + right)
        out[:, left : left + width] = waves
        n = lengths[:, None]
        before = torch.arange(-left, 0, device=waves.device).expand(batch, -1)
        out[:, :left] = waves.gather(1, _mirror(before, n))
        after = n + torch.arange(right, device=waves.device)[None, :]
        out.scatter_(1, after + left, waves.gather(1, _mirror(after, n)))
        start = left + int(first_sample(0, self.cfg))
        return out[:, start:]


_CACHE: dict[tuple, Fbank] = {}


def compute_fbank(wave: np.ndarray | torch.Tensor, cfg: FbankConfig | None = None) -> torch.Tensor:
    """Features [T, F] of one utterance (1-D float wave in [-1, 1]), on the wave's device (CPU for numpy)."""
    cfg = cfg or FbankConfig()
    wave = torch.as_tensor(wave, dtype=torch.float32)
    key = (astuple(cfg), str(wave.device))
    if key not in _CACHE:
        _CACHE[key] = Fbank(cfg).to(wave.device)
    with torch.inference_mode():
        feats, _ = _CACHE[key](wave.reshape(1, -1))
    return feats[0]


class StreamingFbank:
    """Streaming front-end: feed audio in pieces of any size, get exactly the frames the offline `Fbank` gives.

    A frame is emitted as soon as all its samples have arrived; `flush()` ends the utterance (with snip_edges=False
    it emits the last frames, which mirror the signal's end). Memory stays bounded: only the last frame_length
    samples (plus any not yet framed) are kept.
    """

    def __init__(self, cfg: FbankConfig | None = None, device: torch.device | str = "cpu"):
        self.fbank = Fbank(cfg).to(device)
        self.cfg = self.fbank.cfg
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget everything; the next sample starts a new utterance."""
        self._buffer = torch.zeros(0, device=self.device)
        self._buffer_start = 0  # absolute index of _buffer[0]
        self._received = 0  # samples accepted so far
        self._next_frame = 0  # index of the next frame to emit
        self._finished = False

    @property
    def num_frames_emitted(self) -> int:
        return self._next_frame

    def accept_waveform(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Add 1-D samples in [-1, 1]; return the newly complete frames [n, F] (n may be 0)."""
        if self._finished:
            raise RuntimeError("StreamingFbank: accept_waveform after flush(); call reset() first")
        samples = torch.as_tensor(samples, dtype=torch.float32).reshape(-1).to(self.device)
        self._buffer = torch.cat([self._buffer, samples])
        self._received += samples.numel()
        length, shift, _ = frame_sizes(self.cfg)
        # frames whose window ends inside the received audio; for snip_edges=False also no more than the final count
        last_end = self._received - length - int(first_sample(0, self.cfg))
        ready = last_end // shift + 1 if last_end >= 0 else 0
        ready = min(ready, int(num_frames(self._received, self.cfg)))
        return self._emit(ready)

    def flush(self) -> torch.Tensor:
        """End of input: return the remaining frames (only with snip_edges=False can there be any)."""
        self._finished = True
        return self._emit(int(num_frames(self._received, self.cfg)))

    finalize = flush

    def _emit(self, upto: int) -> torch.Tensor:
        """Compute frames [next_frame, upto) from the buffer, then drop samples no later frame can need."""
        first = self._next_frame
        if upto <= first:
            return torch.zeros(0, self.fbank.dim, device=self.device)
        length = self.fbank.frame_length
        pos = first_sample(torch.arange(first, upto, device=self.device), self.cfg)[:, None]
        pos = pos + torch.arange(length, device=self.device)[None, :]
        if self._finished:
            pos = _mirror(pos, torch.tensor(self._received, device=self.device))
        else:
            pos = torch.where(pos < 0, -pos - 1, pos)  # mirrored start (needs only samples already received)
        with torch.inference_mode():
            feats = self.fbank.frames_to_features(self._buffer[pos - self._buffer_start])
        self._next_frame = upto
        keep_from = max(0, min(int(first_sample(upto, self.cfg)), self._received - length))
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :].clone()
            self._buffer_start = keep_from
        return feats


class CMVNStats:
    """Running per-dimension sums for global mean/variance normalization, in float64."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0  # frames seen
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.sum_sq = torch.zeros(dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Add feats [T, F] or [B, T, F]; with lengths [B] only each utterance's first lengths[b] frames count."""
        feats = feats.detach().to("cpu", torch.float64)
        if feats.dim() == 2:
            feats = feats[None]
        if feats.shape[-1] != self.dim:
            raise ValueError(f"CMVNStats: feature dim {feats.shape[-1]} != {self.dim}")
        if lengths is not None:
            valid = torch.arange(feats.shape[1])[None, :] < lengths.cpu()[:, None]
            feats = feats[valid]
        feats = feats.reshape(-1, self.dim)
        self.count += feats.shape[0]
        self.sum += feats.sum(0)
        self.sum_sq += feats.square().sum(0)

    def merge(self, other: CMVNStats) -> CMVNStats:
        """Add another accumulator's counts into this one (e.g. from parallel workers); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"CMVNStats.merge: dim {other.dim} != {self.dim}")
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        return self

    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("CMVNStats: no frames accumulated")
        return self.sum / self.count

    def std(self, floor: float = 1e-5) -> torch.Tensor:
        """Population standard deviation, floored so constant dimensions do not blow up."""
        var = self.sum_sq / self.count - self.mean().square()
        return var.clamp_min(0).sqrt().clamp_min(floor)

    def to_dict(self) -> dict:
        return {"dim": self.dim, "count": self.count, "sum": self.sum.tolist(), "sum_sq": self.sum_sq.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> CMVNStats:
        stats = cls(int(d["dim"]))
        stats.count = int(d["count"])
        stats.sum = torch.tensor(d["sum"], dtype=torch.float64)
        stats.sum_sq = torch.tensor(d["sum_sq"], dtype=torch.float64)
        return stats


class GlobalCMVN(nn.Module):
    """(feats - mean) * istd with float32 buffers `mean`/`istd` (saved in state_dict); padded frames stay zero."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    @classmethod
    def from_stats(cls, stats: CMVNStats, std_floor: float = 1e-5) -> GlobalCMVN:
        cmvn = cls(stats.dim)
        cmvn.mean.copy_(stats.mean().float())
        cmvn.istd.copy_((1.0 / stats.std(std_floor)).float())
        return cmvn

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """feats [B, T, F] (or [T, F]) → normalized; with lengths [B], frames past each length are zero."""
        out = (feats - self.mean) * self.istd
        if lengths is not None:
            valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
            out = out.masked_fill(~valid[..., None], 0.0)
        return out

    def to_dict(self) -> dict:
        """JSON-ready {"mean": [...], "istd": [...]} (floats round-trip exactly)."""
        return {"mean": self.mean.tolist(), "istd": self.istd.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> GlobalCMVN:
        if len(d["mean"]) != len(d["istd"]):
            raise ConfigError(f"feature stats: mean has {len(d['mean'])} values but istd has {len(d['istd'])}")
        cmvn = cls(len(d["mean"]))
        cmvn.mean.copy_(torch.tensor(d["mean"], dtype=torch.float32))
        cmvn.istd.copy_(torch.tensor(d["istd"], dtype=torch.float32))
        return cmvn


@dataclass
class SpecAugmentConfig:
    """SpecAugment policy (Park et al. 2019); defaults are close to the paper's LibriSpeech-double policy, warp off."""

    num_freq_masks: int = bounded(2, ge=0)  # frequency masks per utterance
    max_freq_width: int = bounded(27, ge=0)  # each frequency mask covers 0 … this many mel bins
    num_time_masks: int = bounded(2, ge=0)  # time masks per utterance
    max_time_width: int = bounded(100, ge=0)  # each time mask covers 0 … this many frames ...
    max_time_fraction: float = bounded(0.2, ge=0, le=1)  # ... and at most this fraction of the utterance's own length
    time_warp: int = bounded(0, ge=0)  # max warp distance in frames (0 = no time warp; the paper used 80)
    mask_value: float = bounded(0.0)  # value written into masked cells (0 = the mean after global CMVN)


class SpecAugment(nn.Module):
    """Time warp, then frequency and time masks, on feats [B, T, F] in training mode (identity in eval mode).

    Masks and warps stay inside each utterance's length: padded frames are never touched. Draws come from
    `generator` when given (reproducible), else from torch's global RNG.
    """

    def __init__(self, cfg: SpecAugmentConfig | None = None):
        super().__init__()
        self.cfg = cfg or SpecAugmentConfig()

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not self.training:
            return feats
        batch, frames, dim = feats.shape
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long)
        lengths = lengths.to(feats.device)

        def uniform(*shape: int) -> torch.Tensor:  # U[0, 1) on feats' device, drawn from `generator` if given
            device = generator.device if generator is not None else feats.device
            return torch.rand(shape, generator=generator, device=device).to(feats.device)

        cfg = self.cfg
        if cfg.time_warp > 0:
            feats = self._time_warp(feats, lengths, uniform(batch), uniform(batch))
        t = torch.arange(frames, device=feats.device)
        valid = t[None, :] < lengths[:, None]  # [B, T]
        mask = torch.zeros(batch, frames, dim, dtype=torch.bool, device=feats.device)
        if cfg.num_freq_masks > 0 and cfg.max_freq_width > 0:
            width = (uniform(batch, cfg.num_freq_masks) * (min(cfg.max_freq_width, dim) + 1)).long()
            start = (uniform(batch, cfg.num_freq_masks) * (dim - width + 1)).long()
            f = torch.arange(dim, device=feats.device)[None, None, :]
            band = ((f >= start[..., None]) & (f < (start + width)[..., None])).any(1)  # [B, F]
            mask |= band[:, None, :] & valid[..., None]
        if cfg.num_time_masks > 0 and cfg.max_time_width > 0:
            limit = (lengths * cfg.max_time_fraction).long().clamp_max(cfg.max_time_width)  # [B] widest mask
            width = (uniform(batch, cfg.num_time_masks) * (limit[:, None] + 1)).long()
            start = (uniform(batch, cfg.num_time_masks) * (lengths[:, None] - width + 1)).long()
            span = ((t[None, None, :] >= start[..., None]) & (t[None, None, :] < (start + width)[..., None])).any(1)
            mask |= (span & valid)[..., None]
        return feats.masked_fill(mask, cfg.mask_value)

    def _time_warp(
        self, feats: torch.Tensor, lengths: torch.Tensor, u_center: torch.Tensor, u_shift: torch.Tensor
    ) -> torch.Tensor:
        """Move frame c to c + w (w ∈ [-W, W]), stretching [0, c] and [c, len-1] linearly; u_* are U[0, 1) draws."""
        w_max = self.cfg.time_warp
        n = lengths.to(feats.dtype)
        ok = lengths > 2 * w_max + 2  # utterances too short to warp are left alone
        center = (w_max + 1 + u_center * (n - 2 * w_max - 2).clamp_min(0)).floor()  # c ∈ [W+1, len-W-2]
        shift = (u_shift * (2 * w_max + 1)).floor() - w_max  # w ∈ [-W, W]
        new_center = center + shift
        t = torch.arange(feats.shape[1], device=feats.device, dtype=feats.dtype)[None, :]
        src = torch.where(
            t < new_center[:, None],
            t * (center / new_center)[:, None],
            center[:, None] + (t - new_center[:, None]) * ((n - 1 - center) / (n - 1 - new_center))[:, None],
        )
        src = torch.minimum(src, (n - 1)[:, None])
        src = torch.where(ok[:, None] & (t < n[:, None]), src, t)  # padding and unwarped utterances stay in place
        lo = src.floor().long().clamp(0, feats.shape[1] - 1)
        hi = torch.maximum(torch.minimum(lo + 1, (lengths - 1)[:, None]), lo)
        frac = (src - lo.to(feats.dtype)).clamp(0, 1)[..., None]
        gather = lambda idx: feats.gather(1, idx[..., None].expand(-1, -1, feats.shape[2]))  # noqa: E731
        return gather(lo) * (1 - frac) + gather(hi) * frac
