"""Fbank vs kaldi-native-fbank, streaming == offline, padding independence, CMVN, SpecAugment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from malsori.audio import load_audio
from malsori.errors import ConfigError
from malsori.features import (
    CMVNStats,
    Fbank,
    FbankConfig,
    GlobalCMVN,
    SpecAugment,
    SpecAugmentConfig,
    StreamingFbank,
    compute_fbank,
    mel_filterbank,
    num_frames,
)

knf = pytest.importorskip("kaldi_native_fbank")

DATA = Path("/work/shared/data")
SO762 = DATA / "speechocean762_test_sample"
FSDD = DATA / "fsdd"

# Tolerances (log domain, nats), measured against kaldi-native-fbank on 40 real utterances with dither=0: both
# implementations run in float32, and a float32 FFT's rounding error is relative to the frame's loudest component,
# so only bins far below a frame's peak differ noticeably (a float64 reference shows both are equally far from the
# exact value there). Measured maxima: 4e-4 for bins within 15 nats (65 dB) of the frame peak, 1.2e-2 within 25
# nats, 2.8e-2 overall (a bin 29 nats, i.e. 1e-13 in power, below its frame's peak); the median is 4e-6.
TOL_LOUD, LOUD_RANGE = 1e-3, 15.0
TOL_QUIET, QUIET_RANGE = 3e-2, 25.0
TOL_ALL = 0.1


def kaldi_fbank(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """kaldi-native-fbank on the same samples (scaled as malsori scales them), as the oracle."""
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.frame_opts.window_type = cfg.window
    opts.frame_opts.preemph_coeff = cfg.preemphasis
    opts.frame_opts.remove_dc_offset = cfg.remove_dc_offset
    opts.frame_opts.round_to_power_of_two = cfg.round_to_power_of_two
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(cfg.sample_rate, (wave.astype(np.float64) * cfg.input_scale).astype(np.float32).tolist())
    fb.input_finished()
    if fb.num_frames_ready == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def assert_close_to_kaldi(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    if ref.size == 0:
        return
    diff = np.abs(ours - ref)
    below_peak = ref.max(axis=1, keepdims=True) - ref
    assert diff[below_peak < LOUD_RANGE].max() <= TOL_LOUD, diff[below_peak < LOUD_RANGE].max()
    assert diff[below_peak < QUIET_RANGE].max() <= TOL_QUIET, diff[below_peak < QUIET_RANGE].max()
    assert diff.max() <= TOL_ALL, diff.max()
    assert np.median(diff) <= 1e-4


def speech_files(n_each: int = 2) -> list[Path]:
    files = []
    for subset in (SO762, FSDD):
        manifest = subset / "manifest.jsonl"
        if manifest.exists():
            lines = manifest.read_text().splitlines()[: n_each * 50 : 50]
            files += [subset / json.loads(line)["audio"] for line in lines]
    return files


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    """A chirp plus noise plus a DC offset, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.standard_normal(n) + 0.02
    return wave.astype(np.float32)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_matches_kaldi_on_real_speech(snip_edges: bool) -> None:
    files = speech_files()
    if not files:
        pytest.skip("shared speech data not present")
    cfg = FbankConfig(snip_edges=snip_edges)
    for path in files:
        wave = load_audio(path)
        assert_close_to_kaldi(compute_fbank(wave, cfg).numpy(), kaldi_fbank(wave, cfg))


@pytest.mark.parametrize(
    "cfg",
    [
        FbankConfig(),
        FbankConfig(snip_edges=False),
        FbankConfig(window="hamming", num_mel_bins=40, low_freq=60.0, high_freq=-400.0),
        FbankConfig(window="hanning", preemphasis=0.0, remove_dc_offset=False, high_freq=7000.0),
        FbankConfig(round_to_power_of_two=False, num_mel_bins=23),
    ],
)
def test_matches_kaldi_on_synthetic(cfg: FbankConfig) -> None:
    for n in (0, 1, 150, 399, 400, 401, 561, 8000):  # includes signals shorter than one window (mirrored repeatedly)
        wave = synthetic(n, seed=n)
        ours = compute_fbank(wave, cfg).numpy()
        assert ours.shape[0] == num_frames(n, cfg)
        assert_close_to_kaldi(ours, kaldi_fbank(wave, cfg))


def test_unscaled_input_matches_kaldi_fed_floats() -> None:
    cfg = FbankConfig(input_scale=1.0)
    wave = synthetic(4000, seed=3)
    assert_close_to_kaldi(compute_fbank(wave, cfg).numpy(), kaldi_fbank(wave, cfg))


def test_dither_is_seeded_and_small() -> None:
    wave = torch.from_numpy(synthetic(4000))[None]
    fbank = Fbank(FbankConfig(dither=1.0))
    a, _ = fbank(wave, generator=torch.Generator().manual_seed(0))
    b, _ = fbank(wave, generator=torch.Generator().manual_seed(0))
    c, _ = fbank(wave, generator=torch.Generator().manual_seed(1))
    clean, _ = Fbank()(wave)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - clean).abs().median() < 1e-2  # dither of 1 int16 step barely moves a loud signal
    assert Fbank().state_dict() == {}  # window and mel weights derive from the config


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    waves = torch.stack([torch.from_numpy(synthetic(16000, seed=s)) for s in range(3)])
    lengths = torch.tensor([16000, 9000, 300])
    cpu, cpu_lens = Fbank()(waves, lengths)
    gpu, gpu_lens = Fbank().cuda()(waves.cuda(), lengths.cuda())
    assert torch.equal(cpu_lens, gpu_lens.cpu())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-4)
    online = StreamingFbank(device="cuda").accept_waveform(waves[0, :7000])
    torch.testing.assert_close(online.cpu(), cpu[0, : online.shape[0]], atol=1e-3, rtol=1e-4)


def test_mel_filterbank_shape() -> None:
    weights = mel_filterbank(FbankConfig())
    assert weights.shape == (257, 80)
    assert (weights >= 0).all() and (weights <= 1).all()
    assert weights[-1].abs().sum() == 0  # Kaldi never uses the Nyquist bin
    assert (weights.argmax(0).diff() >= 0).all()  # filter centres rise with the bin index
    with pytest.raises(ConfigError):
        mel_filterbank(FbankConfig(low_freq=9000.0))
    with pytest.raises(ConfigError):
        Fbank(FbankConfig(window="kaiser"))  # type: ignore[arg-type]


@pytest.mark.parametrize("snip_edges", [True, False])
def test_batch_padding_independence(snip_edges: bool) -> None:
    cfg = FbankConfig(snip_edges=snip_edges)
    fbank = Fbank(cfg)
    lengths = [16000, 5000, 401, 100, 0]
    waves = [torch.from_numpy(synthetic(n, seed=i)) for i, n in enumerate(lengths)]
    for extra in (0, 777):
        batch = torch.randn(len(lengths), max(lengths) + extra) * 0.5  # garbage in the padding
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        feats, feat_lens = fbank(batch, torch.tensor(lengths))
        assert feats.shape[1] == int(feat_lens.max())
        for i, w in enumerate(waves):
            alone, alone_len = fbank(w[None], torch.tensor([len(w)]))
            assert int(feat_lens[i]) == int(alone_len[0]) == num_frames(len(w), cfg)
            torch.testing.assert_close(feats[i, : feat_lens[i]], alone[0], atol=1e-4, rtol=1e-5)
            assert (feats[i, feat_lens[i] :] == 0).all()


@pytest.mark.parametrize("snip_edges", [True, False])
def test_streaming_equals_offline(snip_edges: bool) -> None:
    cfg = FbankConfig(snip_edges=snip_edges)
    rng = np.random.default_rng(7)
    stream = StreamingFbank(cfg)
    for n in (16000, 390, 137):
        wave = synthetic(n, seed=n)
        offline = compute_fbank(wave, cfg)
        for sizes in ("ones", "random", "big"):
            stream.reset()
            pieces, pos = [], 0
            while pos < n:
                size = {"ones": 1, "random": int(rng.integers(1, 700)), "big": 3001}[sizes]
                if sizes == "ones" and n > 2000 and pos > 600:
                    size = int(rng.integers(1, 40))  # keep the test fast: 1-sample pieces only at the start
                pieces.append(stream.accept_waveform(wave[pos : pos + size]))
                pos += size
            pieces.append(stream.flush())
            online = torch.cat(pieces)
            assert online.shape == offline.shape
            torch.testing.assert_close(online, offline, atol=1e-5, rtol=1e-6)
        with pytest.raises(RuntimeError):
            stream.accept_waveform(wave[:10])


def test_streaming_emits_as_soon_as_window_is_complete() -> None:
    stream = StreamingFbank(FbankConfig())
    assert stream.accept_waveform(np.zeros(399, np.float32)).shape[0] == 0
    assert stream.accept_waveform(np.zeros(1, np.float32)).shape[0] == 1  # 400 samples: first frame complete
    assert stream.accept_waveform(np.zeros(159, np.float32)).shape[0] == 0
    assert stream.accept_waveform(np.zeros(1 + 320, np.float32)).shape[0] == 3
    assert stream.flush().shape[0] == 0
    assert stream.num_frames_emitted == 4
    assert stream._buffer.numel() <= 400 + 160  # bounded memory


def test_cmvn_stats_and_module() -> None:
    torch.manual_seed(0)
    feats = torch.randn(3, 50, 4) * torch.tensor([1.0, 2.0, 3.0, 0.5]) + torch.tensor([5.0, -1.0, 0.0, 2.0])
    lengths = torch.tensor([50, 20, 7])
    feats[1, 20:] = 1e6  # padding must not count
    feats[2, 7:] = -1e6
    a, b = CMVNStats(4), CMVNStats(4)
    a.update(feats[:2], lengths[:2])
    b.update(feats[2, :7])
    stats = CMVNStats.from_dict(json.loads(json.dumps(a.merge(b).to_dict())))
    valid = torch.cat([feats[0], feats[1, :20], feats[2, :7]]).double()
    assert stats.count == 77
    torch.testing.assert_close(stats.mean(), valid.mean(0))
    torch.testing.assert_close(stats.std(), valid.std(0, unbiased=False))

    cmvn = GlobalCMVN.from_stats(stats)
    assert cmvn.mean.dtype == cmvn.istd.dtype == torch.float32
    assert set(cmvn.state_dict()) == {"mean", "istd"}
    out = cmvn(feats, lengths)
    normed = torch.cat([out[0], out[1, :20], out[2, :7]])
    torch.testing.assert_close(normed.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert (out[1, 20:] == 0).all() and (out[2, 7:] == 0).all()
    again = GlobalCMVN.from_dict(json.loads(json.dumps(cmvn.to_dict())))
    assert torch.equal(again.mean, cmvn.mean) and torch.equal(again.istd, cmvn.istd)
    loaded = GlobalCMVN(4)
    loaded.load_state_dict(cmvn.state_dict())
    assert torch.equal(loaded(feats, lengths), out)


def masked_cells(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return before != after


def test_specaugment_masks_within_bounds() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=2, max_freq_width=10, num_time_masks=3, max_time_width=20, max_time_fraction=0.1)
    aug = SpecAugment(cfg).train()
    lengths = torch.tensor([300, 120, 40, 1])
    feats = torch.rand(4, 300, 80) + 1.0  # strictly positive so every masked cell (value 0) is visible
    for b in range(4):
        feats[b, lengths[b] :] = 0.0
    gen = torch.Generator().manual_seed(1)
    any_masked = 0
    for _ in range(20):
        out = aug(feats, lengths, generator=gen)
        changed = masked_cells(feats, out)
        assert (out[changed] == 0).all()
        for b in range(4):
            n = int(lengths[b])
            assert not changed[b, n:].any()  # padding untouched
            full_rows = changed[b, :n].all(dim=1)  # time-masked frames
            full_cols = changed[b, :n].all(dim=0) if n else torch.zeros(80, dtype=torch.bool)
            assert int(full_rows.sum()) <= cfg.num_time_masks * min(cfg.max_time_width, int(n * cfg.max_time_fraction))
            assert int(full_cols.sum()) <= cfg.num_freq_masks * cfg.max_freq_width or n <= 1
            # every changed cell is explained by a masked frame or a masked bin
            assert (changed[b, :n] <= (full_rows[:, None] | full_cols[None, :])).all() or n <= 1
        any_masked += int(changed.any())
    assert any_masked > 0
    # seeded: same generator state, same masks
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(aug(feats, lengths, generator=g1), aug(feats, lengths, generator=g2))


def test_specaugment_eval_is_identity_and_warp() -> None:
    aug = SpecAugment(SpecAugmentConfig(time_warp=5, num_freq_masks=0, num_time_masks=0))
    feats = torch.arange(60, dtype=torch.float32).repeat(2, 1)[..., None].expand(2, 60, 3).clone()
    lengths = torch.tensor([60, 30])
    feats[1, 30:] = -7.0
    assert aug.eval()(feats, lengths) is feats
    aug.train()
    gen = torch.Generator().manual_seed(0)
    warped_any = False
    for _ in range(10):
        out = aug(feats, lengths, generator=gen)
        assert torch.equal(out[1, 30:], feats[1, 30:])  # padding untouched
        for b, n in enumerate(lengths.tolist()):
            track = out[b, :n, 0]
            assert track[0] == 0 and abs(float(track[-1]) - (n - 1)) < 1e-4  # ends stay in place
            assert (track.diff() >= -1e-5).all()  # a monotone warp of a ramp stays monotone
            warped_any |= not torch.allclose(track, feats[b, :n, 0])
    assert warped_any
