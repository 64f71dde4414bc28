"""Manifest reading (skips and strict errors), typed configs (unknown keys, overrides), metrics."""

import json
from dataclasses import dataclass, field

import pytest

from malsori.config import apply_overrides, from_dict, load_config, to_dict
from malsori.data.manifest import Utterance, read_manifest, write_manifest
from malsori.errors import ConfigError, ManifestError
from malsori.metrics import error_rates, utterance_errors


def test_manifest_round_trip_keeps_extras(tmp_path):
    utts = [Utterance("a", "audio/a.flac", "hello", "s1", 1.5, {"accent": "en-us"}), Utterance("b", "/abs/b.wav", "x", "", 0.2)]
    path = write_manifest(tmp_path / "m.jsonl", utts)
    m = read_manifest(path)
    assert [u.id for u in m] == ["a", "b"] and not m.skipped
    assert m.utterances[0].extra == {"accent": "en-us"}
    assert m.utterances[0].audio_path == tmp_path / "audio/a.flac"
    assert str(m.utterances[1].audio_path) == "/abs/b.wav"


def test_manifest_malformed_lines_are_counted_or_strict(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [
        json.dumps({"id": "ok", "audio": "a.flac", "text": "t"}),
        '{"id": "trunc", "audio": ',
        json.dumps({"id": "noaudio", "text": "t"}),
        json.dumps([1, 2]),
        json.dumps({"id": "ok", "audio": "b.flac", "text": "dup"}),
        json.dumps({"id": "baddur", "audio": "b.flac", "text": "t", "duration": "long"}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "\xff", "audio": "x", "text": "y"}\n')
    m = read_manifest(path)
    assert [u.id for u in m] == ["ok"]
    assert [ln for ln, _ in m.skipped] == [2, 3, 4, 5, 6, 7]
    assert "missing field" in m.skipped[1][1] and "duplicate" in m.skipped[3][1] and "UTF-8" in m.skipped[5][1]
    with pytest.raises(ManifestError, match=r"m.jsonl:2: malformed JSON"):
        read_manifest(path, strict=True)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")


@dataclass
class Inner:
    size: int = 3  # a size
    rate: float = 0.5  # a rate


@dataclass
class Outer:
    name: str = "x"  # a name
    inner: Inner = field(default_factory=Inner)  # nested
    opt: Inner | None = None  # optional section
    pair: tuple[float, float] = (1.0, 2.0)  # a pair


def test_config_unknown_keys_and_types_are_named(tmp_path):
    assert from_dict(Outer, {"inner": {"size": 5}}).inner.size == 5
    with pytest.raises(ConfigError, match="unknown config key 'inner.sise'"):
        from_dict(Outer, {"inner": {"sise": 5}})
    with pytest.raises(ConfigError, match="inner.size: expected an integer"):
        from_dict(Outer, {"inner": {"size": "big"}})
    y = tmp_path / "r.yaml"
    y.write_text("name: a\ninner:\n  rate: 2\n")
    cfg = load_config(Outer, y, ["inner.size=7", "opt.size=1", "pair=[3, 4]", "inner.rate=2e-3"])
    assert cfg.inner == Inner(7, 2e-3) and cfg.opt == Inner(1, 0.5) and cfg.pair == (3.0, 4.0)
    assert from_dict(Outer, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["nonsense"])
    y.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, y)


def test_error_rates_match_hand_counts():
    r = error_rates(["a b c d", "x y"], ["a c d e", "x y"])  # 1 deletion + 1 insertion over 6 words
    assert r.words == 6 and r.deletions == 1 and r.insertions == 1 and r.wer == pytest.approx(2 / 6)
    assert error_rates(["", "a"], ["b c", "a"]).insertions == 2
    assert utterance_errors("the cat", "the hat") == (1, 2, 1, 7)


def test_weighted_sources_refuse_bad_values():
    from malsori.train import DataConfig, read_sources

    with pytest.raises(ConfigError, match="weight must be >= 0"):
        from_dict(DataConfig, {"sources": [{"manifest": "a.jsonl", "weight": -1}]})
    with pytest.raises(ConfigError, match="weight must be >= 0"):
        from_dict(DataConfig, {"sources": [{"manifest": "a.jsonl", "weight": float("nan")}]})
    with pytest.raises(ConfigError, match=r"data.sources\[1\].manifest"):
        read_sources(from_dict(DataConfig, {"sources": [{"manifest": "a.jsonl"}, {"weight": 2.0}]}), verbose=False)
    with pytest.raises(ConfigError, match="no training manifest"):
        read_sources(DataConfig(), verbose=False)
    assert from_dict(DataConfig, {"sources": [{"manifest": "x/real.jsonl"}]}).sources[0].name == "real"
