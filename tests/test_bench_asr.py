"""benchmarks/bench_asr.py: subset choice, set loading and scoring helpers (no model, no shared data needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

bench_asr = pytest.importorskip("bench_asr")


def test_evenly_spaced_picks_spread_unique_items():
    items = list(range(1000))
    picked = bench_asr.evenly_spaced(items, 300)
    assert len(picked) == 300 and len(set(picked)) == 300
    assert picked[0] == 0 and picked[-1] >= 990  # reaches the end of the file, not only its head
    gaps = np.diff(picked)
    assert gaps.min() >= 3 and gaps.max() <= 4
    assert bench_asr.evenly_spaced(items[:5], 300) == items[:5]
    assert bench_asr.evenly_spaced(items[:5], 0) == items[:5]


def test_load_set_subsets_normalizes_and_skips_unreadable(tmp_path):
    from malsori.audio import save_audio

    rows = []
    for i in range(6):
        name = f"a{i}.flac"
        if i != 2:  # utterance 2 points at a missing file
            save_audio(tmp_path / name, 0.1 * np.sin(np.arange(1600 * (i + 1)) / 10).astype(np.float32))
        rows.append({"id": f"u{i}", "audio": name, "text": f"TWO {i} Cats!", "speaker": "s"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = bench_asr.load_set("t", manifest, 3)
    assert [u.id for u in s.utts] == ["u0", "u4"]  # evenly spaced picks u0, u2, u4; u2 is unreadable
    assert s.unreadable == 1
    assert s.refs == ["two zero cats", "two four cats"]
    assert s.seconds == pytest.approx((1600 + 8000) / 16000)
    assert "3 of 6 utterances" in s.source


def test_missing_shared_data_is_reported_not_crashed(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_asr.py"), "--model", str(model),
                          "--data-root", str(tmp_path / "nodata"), "--no-record"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "fsdd" in out.stderr and "not found" in out.stderr  # each missing shared set is named
    assert "nothing to evaluate" in out.stderr
