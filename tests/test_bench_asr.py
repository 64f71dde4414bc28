"""benchmarks/bench_asr.py: set loading and scoring helpers (no model, no shared data needed)."""

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


def _set(refs, groups):
    from malsori.data.manifest import Utterance

    utts = [Utterance(f"u{i}", "x.flac", r, extra={"group": g}) for i, (r, g) in enumerate(zip(refs, groups))]
    return bench_asr.EvalSet("so", "test", utts, [np.zeros(16000, dtype=np.float32)] * len(utts), list(refs))


def test_group_rows_score_each_group_from_the_same_hypotheses():
    s = _set(["a b", "c d", "e f"], ["child", "adult", "child"])
    r = bench_asr.Result("so", "sys", "greedy", ["a b", "x d", "e"], bench_asr.error_rates(s.refs, ["a b", "x d", "e"]), 1.0, 3.0)
    rows = bench_asr.group_table([r], {"so": s})
    child = next(line for line in rows if "| child |" in line)
    adult = next(line for line in rows if "| adult |" in line)
    assert "| 2 | sys | greedy | 25.0 |" in child  # 1 deletion of 4 child words
    assert "| 1 | sys | greedy | 50.0 |" in adult


def test_peer_results_are_cached_per_set_and_rerun_when_the_set_changes(tmp_path):
    s = _set(["a b", "c d"], ["g", "g"])
    calls = []

    def run():
        calls.append(1)
        return bench_asr.Result("so", "peer", "beam 5", ["a b", "c"], bench_asr.error_rates(s.refs, ["a b", "c"]), 2.0, 2.0, [1.0, 1.0])

    first = bench_asr.cached(tmp_path, "peer", s, run)
    again = bench_asr.cached(tmp_path, "peer", s, run)
    assert len(calls) == 1 and again.hyps == first.hyps and again.rates.wer == first.rates.wer == 0.25
    assert "measured" in again.search and again.decode_seconds == 2.0
    fewer = _set(["a b"], ["g"])
    bench_asr.cached(tmp_path, "peer", fewer, run)
    assert len(calls) == 2  # other utterances: the cache does not apply


def test_training_manifests_are_read_from_sources(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"id": name, "audio": "x.flac", "text": "t"}) + "\n")
    (run / "train_config.json").write_text(json.dumps({"data": {"train": "", "sources": [
        {"manifest": str(tmp_path / "a.jsonl")}, {"manifest": str(tmp_path / "b.jsonl")}, {"manifest": str(tmp_path / "gone.jsonl")}]}}))
    assert bench_asr.training_manifests(run / "model") == [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
