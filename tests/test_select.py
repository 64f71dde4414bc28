"""malsori.data.select: the evenly spaced subset an evaluation reads, and loading the readable utterances."""

import numpy as np

from malsori.audio import save_audio
from malsori.data.manifest import Utterance
from malsori.data.select import evenly_spaced, load_waves


def test_evenly_spaced_picks_spread_unique_items():
    items = list(range(1000))
    picked = evenly_spaced(items, 300)
    assert len(picked) == 300 and len(set(picked)) == 300
    assert picked[0] == 0 and picked[-1] >= 990  # reaches the end of the list, not only its head
    gaps = np.diff(picked)
    assert gaps.min() >= 3 and gaps.max() <= 4
    assert evenly_spaced(list(range(10)), 3) == [0, 3, 6]
    assert evenly_spaced(items[:5], 300) == items[:5] and evenly_spaced(items[:5], 0) == items[:5]


def test_load_waves_keeps_the_readable_and_names_the_rest(tmp_path):
    wave = np.sin(np.arange(1600) / 5.0).astype(np.float32) * 0.3
    save_audio(tmp_path / "good.flac", wave)
    (tmp_path / "bad.flac").write_bytes(b"fLaC\x00garbage")
    utts = [Utterance("g", "good.flac", "a", "s", 0.1, {}, tmp_path), Utterance("b", "bad.flac", "b", "s", 0.1, {}, tmp_path),
            Utterance("m", "missing.flac", "c", "s", 0.1, {}, tmp_path)]
    keep, waves, errors = load_waves(utts)
    assert [u.id for u in keep] == ["g"] and len(waves) == 1 and np.allclose(waves[0], wave, atol=1e-3)
    assert len(errors) == 2 and "bad.flac" in str(errors[0]) and "missing.flac" in str(errors[1])
