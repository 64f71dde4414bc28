"""Augmentation: SNR is exact, speed changes length by the factor, reverb keeps length and is seeded."""

import numpy as np
import pytest

from malsori.config import from_dict
from malsori.data.augment import (
    AugmentConfig,
    Augmenter,
    add_noise,
    babble_noise,
    change_speed,
    colored_noise,
    power,
    reverberate,
    room_impulse_response,
)
from malsori.errors import ConfigError

SR = 16000


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope and a silent stretch, like speech."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    wave[: SR // 10] = 0
    return (0.1 * wave + 0.001 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 25.0])
def test_snr_is_achieved(kind, snr):
    clean = _speechlike()
    noise = colored_noise(len(clean), kind, np.random.default_rng(1))
    noisy = add_noise(clean, noise, snr)
    measured = 10 * np.log10(power(clean) / power(noisy - clean))
    assert abs(measured - snr) < 0.1


def test_noise_colors_have_the_right_slope():
    rng = np.random.default_rng(0)
    slopes = {}
    for kind in ("white", "pink", "brown"):
        spec = np.abs(np.fft.rfft(colored_noise(1 << 16, kind, rng))) ** 2
        f = np.arange(len(spec))
        band = (f > 100) & (f < 20000)
        slopes[kind] = np.polyfit(np.log10(f[band]), np.log10(spec[band] + 1e-20), 1)[0]
        assert abs(power(colored_noise(4000, kind, rng)) - 1.0) < 1e-3
    assert abs(slopes["white"]) < 0.1 and abs(slopes["pink"] + 1) < 0.15 and abs(slopes["brown"] + 2) < 0.15


def test_babble_noise_mixes_sources():
    rng = np.random.default_rng(0)
    sources = [_speechlike(0.7, seed=s) for s in range(5)]
    babble = babble_noise(12000, sources, rng)
    assert babble.shape == (12000,) and abs(power(babble) - 1.0) < 1e-3
    noisy = add_noise(sources[0], babble[: len(sources[0])], 5.0)
    assert abs(10 * np.log10(power(sources[0]) / power(noisy - sources[0])) - 5.0) < 0.1


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_changes_length_by_factor(factor):
    wave = _speechlike(2.0)
    out = change_speed(wave, factor, SR)
    assert abs(len(out) - len(wave) / factor) <= 2
    assert change_speed(wave, 1.0, SR) is wave


def test_speed_shifts_pitch():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = change_speed(tone, 1.1, SR)
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * SR / len(out)
    assert abs(peak_hz - 1100) < 5


def test_reverb_keeps_length_and_power_and_is_seeded():
    wave = _speechlike()
    ir1 = room_impulse_response(0.5, 3.0, SR, np.random.default_rng(7))
    ir2 = room_impulse_response(0.5, 3.0, SR, np.random.default_rng(7))
    ir3 = room_impulse_response(0.5, 3.0, SR, np.random.default_rng(8))
    assert np.array_equal(ir1, ir2) and not np.array_equal(ir1, ir3)
    assert ir1[0] == 1.0 and len(ir1) == int(0.5 * SR)
    # tail energy relative to the direct path is the requested DRR
    assert abs(10 * np.log10(1.0 / np.sum(ir1[1:] ** 2)) - 3.0) < 1e-6
    # the envelope decays by about 60 dB over rt60: compare the first and last 50 ms of the tail
    head, tail = np.sum(ir1[1:800] ** 2), np.sum(ir1[-800:] ** 2)
    assert 45 < 10 * np.log10(head / tail) < 70
    out = reverberate(wave, ir1)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert abs(power(out) / power(wave) - 1) < 1e-4
    assert not np.allclose(out, wave)
    # the direct path alone is the identity
    assert np.allclose(reverberate(wave, np.array([1.0])), wave, atol=1e-6)


def test_augmenter_is_deterministic_and_reports_params():
    cfg = AugmentConfig(speed_prob=1.0, speeds=[1.1], reverb_prob=1.0, noise_prob=1.0, snr_db=(10.0, 10.0))
    aug = Augmenter(cfg, SR)
    wave = _speechlike()
    out1, p1 = aug(wave, np.random.default_rng(3))
    out2, p2 = aug(wave, np.random.default_rng(3))
    out3, _ = aug(wave, np.random.default_rng(4))
    assert p1 == p2 and np.array_equal(out1, out2) and not np.array_equal(out1, out3)
    assert p1["speed"] == 1.1 and "rt60" in p1 and p1["noise"] in ("white", "pink", "brown") and p1["snr_db"] == 10.0
    assert abs(len(out1) - len(wave) / 1.1) <= 2
    # sample + apply is the same as calling it
    rng = np.random.default_rng(3)
    assert np.array_equal(aug.apply(wave, aug.sample(rng), rng), out1)


def test_augmenter_probabilities():
    aug = Augmenter(AugmentConfig(noise_prob=0.3), SR)
    rng = np.random.default_rng(0)
    hits = sum("noise" in aug.sample(rng) for _ in range(2000))
    assert 500 < hits < 700
    wave = _speechlike()
    out, params = Augmenter(AugmentConfig(), SR)(wave, rng)
    assert params == {} and np.array_equal(out, wave) and not AugmentConfig().active


def test_augment_config_errors():
    with pytest.raises(ConfigError, match="noise_prob"):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(ConfigError, match="noise_types"):
        from_dict(AugmentConfig, {"noise_types": ["purple"]})
    with pytest.raises(ConfigError, match="babble"):
        Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["babble"]), SR)(_speechlike(), np.random.default_rng(0))
    babbler = Augmenter(AugmentConfig(noise_prob=1.0, noise_types=["babble"]), SR, babble=[_speechlike()])
    out, p = babbler(_speechlike(0.5), np.random.default_rng(0))
    assert p["noise"] == "babble" and len(out) == SR // 2


@pytest.mark.parametrize("codec", ["mulaw", "opus", "mp3"])
def test_codec_round_trip_keeps_length_and_the_signal(codec):
    from malsori.data.augment import codec_round_trip

    wave = _speechlike(1.3)
    out = codec_round_trip(wave, codec, SR, 0.9)
    assert out.shape == wave.shape and out.dtype == np.float32
    assert codec_round_trip(wave, codec, SR, 1.0).shape == wave.shape  # the ends of the drawn range work too
    assert codec_round_trip(wave, codec, SR, 0.5).shape == wave.shape
    assert np.corrcoef(wave, out)[0, 1] > 0.9  # aligned (codec delay removed) and still the same sound
    assert not np.array_equal(out, wave)


def test_band_limit_removes_what_is_outside_the_band():
    from malsori.data.augment import band_limit

    t = np.arange(SR) / SR
    low, mid, high = (np.sin(2 * np.pi * f * t).astype(np.float32) for f in (100, 1000, 6000))
    out = band_limit(low + mid + high, 300, 3400, SR)
    assert out.shape == (SR,)
    np.testing.assert_allclose(out, mid, atol=1e-3)


def test_channel_and_gain_augmentations_keep_length_and_are_seeded():
    cfg = AugmentConfig(bandlimit_prob=1.0, codec_prob=1.0, codecs=["mulaw", "opus"], gain_prob=1.0, gain_db=(20.0, 20.0))
    aug = Augmenter(cfg, SR)
    wave = _speechlike()
    out1, p1 = aug(wave, np.random.default_rng(5))
    out2, p2 = aug(wave, np.random.default_rng(5))
    assert p1 == p2 and np.array_equal(out1, out2)
    assert {"band", "codec", "gain_db"} <= set(p1) and out1.shape == wave.shape
    assert np.abs(out1).max() <= 1.0  # +20 dB drives the peaks past full scale: clipped as a recorder would
    bands = [Augmenter(AugmentConfig(bandlimit_prob=1.0, telephone_share=0.5), SR).sample(np.random.default_rng(i))["band"]
             for i in range(200)]
    assert 70 < sum(b == [300.0, 3400.0] for b in bands) < 130


def test_noise_and_impulse_response_folders(tmp_path):
    from malsori.audio import save_audio

    (tmp_path / "noise").mkdir()
    (tmp_path / "rir").mkdir()
    save_audio(tmp_path / "noise" / "hum.wav", 0.3 * np.sin(np.arange(SR // 2) * 2 * np.pi * 50 / SR).astype(np.float32))
    ir = np.zeros(800, dtype=np.float32)
    ir[0], ir[400] = 0.5, 0.25  # an echo 25 ms later
    save_audio(tmp_path / "rir" / "echo.wav", ir)
    cfg = AugmentConfig(noise_prob=1.0, noise_types=["file"], noise_dir=str(tmp_path / "noise"), snr_db=(0.0, 0.0),
                        reverb_prob=1.0, rir_dir=str(tmp_path / "rir"))
    aug = Augmenter(cfg, SR)
    wave = _speechlike()
    out, p = aug(wave, np.random.default_rng(0))
    assert p["noise"] == "file" and p["rir"] == 0 and "rt60" not in p and out.shape == wave.shape
    with pytest.raises(ConfigError, match="noise_dir"):
        AugmentConfig(noise_prob=1.0, noise_types=["file"])
    with pytest.raises(ConfigError, match="not a folder"):
        AugmentConfig(rir_dir=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        Augmenter(AugmentConfig(rir_dir=str(tmp_path / "empty")), SR)
