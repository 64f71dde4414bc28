"""Corpus synthesis with eSpeak NG (determinism, held-out voices and sentences, manifests, resume, CLI) and the
sentence generator."""

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from malsori.audio import audio_duration, load_audio
from malsori.data.manifest import read_manifest
from malsori.data.sentences import DOMAINS, generate_sentences, read_text_sentences
from malsori.data.synth import (
    SynthConfig,
    Synthesizer,
    SynthParams,
    Voice,
    available_accents,
    available_variants,
    corpus_summary,
    plan,
    synthesize_corpus,
)
from malsori.errors import ConfigError, MalsoriError
from malsori.text import normalize

SMALL = dict(num_train=6, num_dev=2, num_test=2, dev_voices=2, test_voices=2, workers=1, domains=["commands", "codes"])


def _read(out: Path) -> dict:
    """split → (manifest lines, {id: samples})."""
    res = {}
    for split in ("train", "dev", "test"):
        lines = (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        utts = [json.loads(x) for x in lines]
        res[split] = (lines, {u["id"]: sf.read(out / u["audio"], dtype="int16")[0] for u in utts})
    return res


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "c"
    synthesize_corpus(SynthConfig(**SMALL), out, progress=False)
    return out


# ---- single utterances ----------------------------------------------------------------------------


def test_voices_found():
    accents, variants = available_accents(), available_variants()
    assert {"en", "en-us", "en-gb-x-rp", "en-gb-scotland"} <= set(accents) and "en-shaw" not in accents
    assert {"m1", "f3", "klatt2", "whisper"} <= set(variants)


def test_synthesize_is_16k_trimmed_leveled_and_deterministic(synth):
    p = SynthParams(lead_silence=0.2, trail_silence=0.3, level_db=-20.0)
    wave = synth.synthesize("turn off the kitchen lights", Voice("en-us", "f3"), p)
    assert wave.dtype == np.float32 and 0.8 < len(wave) / 16000 < 3.0
    assert np.all(wave[: int(0.2 * 16000)] == 0) and np.all(wave[-int(0.3 * 16000):] == 0)
    assert np.abs(wave[int(0.2 * 16000): int(0.2 * 16000) + 800]).max() > 0  # speech starts right after the lead
    speech = wave[int(0.2 * 16000): -int(0.3 * 16000)]
    frames = speech[: len(speech) // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(1) + 1e-12)
    active = frames[db > db.max() - 45]
    assert abs(10 * np.log10((active.astype(np.float64) ** 2).mean()) - (-20.0)) < 0.5
    again = synth.synthesize("turn off the kitchen lights", Voice("en-us", "f3"), p)
    assert np.array_equal(wave, again)


def test_no_state_leaks_between_utterances(synth):
    """eSpeak keeps hidden state (flutter phase); each utterance must not depend on what came before."""
    p = SynthParams(espeak_seed=5)
    first = synth.espeak("set a timer for ten minutes", Voice("en-gb-x-rp", "m1"), p)
    synth.espeak("something else entirely, and longer than that", Voice("en-029", "klatt3"), SynthParams(rate=300))
    assert np.array_equal(first, synth.espeak("set a timer for ten minutes", Voice("en-gb-x-rp", "m1"), p))


def test_parameters_change_the_audio(synth):
    base = synth.espeak("the weather is nice today", Voice("en-us", "m3"), SynthParams(rate=175))
    fast = synth.espeak("the weather is nice today", Voice("en-us", "m3"), SynthParams(rate=300))
    assert len(fast) < 0.8 * len(base)
    other_accent = synth.espeak("the weather is nice today", Voice("en-gb-scotland", "m3"), SynthParams(rate=175))
    other_variant = synth.espeak("the weather is nice today", Voice("en-us", "f2"), SynthParams(rate=175))
    assert not np.array_equal(base, other_accent) and not np.array_equal(base, other_variant)


def test_unknown_voice_is_a_clear_error(synth):
    with pytest.raises(MalsoriError, match="no voice 'en-xx\\+m1'"):
        synth.synthesize("hello", Voice("en-xx", "m1"))
    with pytest.raises(MalsoriError, match="nosuch"):
        synth.synthesize("hello", "en-us+nosuch")


# ---- corpus ---------------------------------------------------------------------------------------


def test_manifest_fields_and_durations(corpus):
    fields = {"id", "audio", "text", "speaker", "duration", "accent", "variant", "rate", "pitch", "pitch_range",
              "volume", "word_gap", "lead_silence", "trail_silence", "level_db", "source", "text_normalized"}
    for split, n in (("train", 6), ("dev", 2), ("test", 2)):
        m = read_manifest(corpus / f"{split}.jsonl", strict=True)
        assert len(m) == n
        for u in m:
            d = u.to_json()
            assert fields <= set(d), fields - set(d)
            assert u.speaker == f"{u.extra['accent']}+{u.extra['variant']}"
            assert u.extra["text_normalized"] == normalize(u.text)
            assert u.audio == f"audio/{split}/{u.id}.flac"
            info = sf.info(u.audio_path)
            assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
            assert abs(audio_duration(u.audio_path) - u.duration) < 1e-3
            assert len(load_audio(u.audio_path)) > 0.3 * 16000
    cfg = json.loads((corpus / "synth_config.json").read_text())
    assert cfg["config"]["num_train"] == 6 and "workers" not in cfg["config"]


def test_splits_have_disjoint_voices_and_sentences(tmp_path):
    cfg = SynthConfig(num_train=300, num_dev=40, num_test=40, dev_voices=5, test_voices=6, seed=3)
    jobs, _ = plan(cfg)  # the plan decides everything; no audio needed to check it
    voices = {s: {j.voice for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    texts = {s: {j.spoken for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    assert len(voices["dev"]) <= 5 and len(voices["test"]) <= 6 and len(voices["train"]) > 50
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not voices[a] & voices[b] and not texts[a] & texts[b]
    assert len(texts["train"]) == 300  # the generator gives every utterance its own sentence
    assert len({j.voice.accent for j in jobs}) == len(available_accents())


def test_same_seed_same_corpus_any_workers_and_different_seed_differs(corpus, tmp_path):
    other = tmp_path / "two_workers"
    synthesize_corpus(SynthConfig(**{**SMALL, "workers": 2}), other, progress=False)
    a, b = _read(corpus), _read(other)
    for split in a:
        assert a[split][0] == b[split][0]
        assert all(np.array_equal(a[split][1][k], b[split][1][k]) for k in a[split][1])
    reseeded = tmp_path / "seed1"
    synthesize_corpus(SynthConfig(**{**SMALL, "seed": 1}), reseeded, progress=False)
    c = _read(reseeded)
    assert a["train"][0] != c["train"][0]
    assert not np.array_equal(a["train"][1]["train-000000"], c["train"][1]["train-000000"])


def test_resume_only_makes_missing_files(corpus, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(corpus, out)
    files = sorted((out / "audio").rglob("*.flac"))
    old = 1_000_000_000
    for f in files:
        os.utime(f, (old, old))
    victim = out / "audio" / "train" / "train-000003.flac"
    original = victim.read_bytes()
    victim.unlink()
    (out / "train.jsonl").unlink()  # as if killed before the manifests were written
    (out / "audio" / "dev" / ".dev-000001.abc123.flac").write_bytes(b"half a file")  # a killed save
    synthesize_corpus(SynthConfig(**SMALL), out, progress=False)
    stats = json.loads((out / "synth_stats.json").read_text())
    assert stats["synthesized"] == 1 and stats["skipped_existing"] == 9
    assert victim.read_bytes() == original
    assert all(f.stat().st_mtime == old for f in files if f != victim)
    assert not list((out / "audio").rglob(".*.flac"))
    assert (out / "train.jsonl").read_text() == (corpus / "train.jsonl").read_text()


def test_resume_with_other_arguments_is_refused(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"different arguments \(num_train: 6 there, 7 now"):
        synthesize_corpus(SynthConfig(**{**SMALL, "num_train": 7}), corpus, progress=False)
    with pytest.raises(ConfigError, match="augment.noise_prob"):
        synthesize_corpus(SynthConfig(**{**SMALL, "augment": {"noise_prob": 0.5}}), corpus, progress=False)
    # workers do not change the output, so they may differ
    synthesize_corpus(SynthConfig(**{**SMALL, "workers": 2}), corpus, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize_corpus(SynthConfig(**SMALL), tmp_path / "full", progress=False)


def test_augmentation_is_recorded(tmp_path):
    aug = {"noise_prob": 1.0, "snr_db": [10.0, 10.0], "noise_types": ["pink", "babble"], "speed_prob": 1.0,
           "speeds": [1.1]}
    cfg = SynthConfig(**{**SMALL, "augment": aug})
    synthesize_corpus(cfg, tmp_path / "aug", progress=False)
    train = read_manifest(tmp_path / "aug" / "train.jsonl")
    assert all(u.extra["augment"]["speed"] == 1.1 and u.extra["augment"]["snr_db"] == 10.0 for u in train)
    assert {u.extra["augment"]["noise"] for u in train} <= {"pink", "babble"}
    test = read_manifest(tmp_path / "aug" / "test.jsonl")
    assert all("augment" not in u.extra for u in test)  # only train is augmented by default


def test_text_files_and_bad_lines(tmp_path):
    good = tmp_path / "a.txt"
    lines = "".join(f"Line number {i}.\n" for i in range(20))
    good.write_text("\ufeffFirst sentence here.\n\nSecond one, with 2 numbers: 7:30!\n" + lines, encoding="utf-8")
    zipped = tmp_path / "b.txt.gz"
    with gzip.open(zipped, "wb") as f:
        f.write(b"Zipped sentence.\n\xff\xfe broken bytes\n???\n")
    skipped: list[str] = []
    sents = read_text_sentences([good, zipped], skipped=skipped)
    assert sents[0] == "First sentence here." and "Zipped sentence." in sents and len(sents) == 23
    assert skipped == [f"{zipped}:2: not UTF-8 (byte 0)", f"{zipped}:3: no speakable words"]
    with pytest.raises(MalsoriError, match=f"{zipped}:2: not UTF-8"):
        read_text_sentences([good, zipped], strict=True)
    with pytest.raises(MalsoriError, match="missing.txt: text file not found"):
        read_text_sentences([tmp_path / "missing.txt"])
    cfg = SynthConfig(**{**SMALL, "text_files": [str(good), str(zipped)]})
    jobs, notes = plan(cfg)
    assert {j.source for j in jobs} == {"file"} and len(notes["text_lines_skipped"]) == 2
    assert {j.text for j in jobs} <= set(sents)
    with pytest.raises(MalsoriError, match="not UTF-8"):
        plan(SynthConfig(**{**SMALL, "text_files": [str(zipped)], "strict": True}))


def test_train_hours_sizes_the_train_split():
    jobs, _ = plan(SynthConfig(num_train=1, num_dev=1, num_test=1, train_hours=0.05))
    n = sum(j.split == "train" for j in jobs)
    assert 40 < n < 150  # 180 s of audio at about 2-3 s an utterance


def test_cli(tmp_path):
    from malsori.cli import main
    from malsori.commands.synth import synth as synth_command

    out = tmp_path / "cli"
    args = ["--out", str(out), "--num-train", "4", "--num-dev", "1", "--num-test", "1", "--dev-voices", "1",
            "--test-voices", "1", "--workers", "1", "--quiet", "--domains", "weather", "--noise-snr", "5", "15"]
    res = CliRunner().invoke(synth_command, args)
    assert res.exit_code == 0, res.output
    assert "train" in res.output and "x real time" in res.output and "0 already there" in res.output
    summary = corpus_summary({s: out / f"{s}.jsonl" for s in ("train", "dev", "test")})
    assert summary["train"]["utterances"] == 4 and summary["dev"]["voices"] == 1
    assert all(u.extra["source"] == "weather" for u in read_manifest(out / "train.jsonl"))
    again = CliRunner().invoke(synth_command, args)
    assert again.exit_code == 0 and "4 already there" not in again.output and "6 already there" in again.output
    bad = CliRunner().invoke(main, ["data", "synth", *args[:3], "5", *args[4:]])
    assert bad.exit_code == 2 and "error:" in bad.output and "num_train: 4 there, 5 now" in bad.output


# ---- sentence generator ---------------------------------------------------------------------------


def test_generator_is_seeded_distinct_and_diverse():
    a = generate_sentences(3000, seed=0)
    assert a == generate_sentences(3000, seed=0) and a != generate_sentences(3000, seed=1)
    keys = [normalize(s) for _, s in a]
    assert len(set(keys)) == len(keys)
    assert {d for d, _ in a} == set(DOMAINS)
    vocab = {w for k in keys for w in k.split()}
    assert len(vocab) > 500
    assert all(s[0].isupper() and s[-1] in ".?!" for _, s in a)


def test_generator_domains():
    only = generate_sentences(200, seed=0, domains=["codes", "numbers"])
    assert {d for d, _ in only} == {"codes", "numbers"}
    assert any(any(c.isdigit() for c in s) for _, s in only)
    with pytest.raises(ConfigError, match="unknown sentence domain"):
        generate_sentences(5, seed=0, domains=["poetry"])


def test_config_errors_and_edge_cases():
    jobs, _ = plan(SynthConfig(num_train=0, num_dev=3, num_test=2))
    assert [j.split for j in jobs] == ["dev"] * 3 + ["test"] * 2
    with pytest.raises(ConfigError, match="accents: unknown en-xx"):
        plan(SynthConfig(accents=["en-xx"]))
    with pytest.raises(ConfigError, match="dev_voices/test_voices"):
        plan(SynthConfig(accents=["en"], variants=["m1", "m2"], dev_voices=1, test_voices=1))
    with pytest.raises(ConfigError, match="rate: range low 200 is above high 100"):
        SynthConfig(rate=(200, 100))
    with pytest.raises(ConfigError, match="augment_splits"):
        SynthConfig(augment_splits=["valid"])
    with pytest.raises(ConfigError, match="too few"):
        plan(SynthConfig(num_train=0, num_dev=0, num_test=0))
