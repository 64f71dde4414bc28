"""Hostile inputs through the command line (issue #17, input side): every bad audio file, manifest line or output path
gives exit status 2 and one `error:` line naming the culprit, never a traceback; or exit 0 with a correct result.

All bad inputs are made here in tmp_path; the CLI runs in-process (click's CliRunner on `malsori.cli.main`) on a tiny
randomly initialized model, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from malsori.cli import main

SR = 16000


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def clean_error(result, *culprits: str) -> str:
    """Exit 2 through SystemExit, no traceback, exactly one `error:` line on stderr, naming every culprit."""
    assert isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for c in culprits:
        assert str(c) in lines[0], (c, lines[0])
    return lines[0]


def ok(result):
    assert result.exit_code == 0 and result.exception is None, (result.exception, result.output)
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialized streaming Conformer-CTC model folder (its text is noise; what matters is that it is
    the same text the API gives)."""
    import torch

    from malsori.features import FbankConfig, GlobalCMVN
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.chunked import ChunkConfig
    from malsori.nn.conformer import ConformerConfig
    from malsori.pretrained import save_model_dir
    from malsori.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer("char", ["hello world", "a bad file"])
    cfg = ModelConfig(encoder="conformer", head="ctc",
                      conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, conv_kernel=7, dropout=0.0, subsampling_channels=4,
                                                  chunk=ChunkConfig(causal=True)))
    model = build_model(cfg, 80, tok.vocab_size)
    return save_model_dir(tmp_path_factory.mktemp("model") / "m", model, cfg, FbankConfig(), tok, GlobalCMVN(80))


@pytest.fixture(scope="module")
def rec(model_dir):
    import malsori

    return malsori.load(model_dir, "cpu")


def noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((int(seconds * sr), channels)).astype(np.float32) * 0.1
    return x[:, 0] if channels == 1 else x


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad audio files, made fresh."""
    d = tmp_path_factory.mktemp("audio")
    f = {k: d / n for k, n in [("good", "good.wav"), ("good2", "good2.flac"), ("stereo44", "stereo44.wav"),
                               ("trunc_wav", "trunc.wav"), ("trunc_flac", "trunc.flac"), ("random_mp3", "random.mp3"),
                               ("empty", "empty.wav"), ("zero_samples", "zero.wav"), ("nan", "nan.wav"),
                               ("fifo", "fifo.wav"), ("loop", "loop.wav"), ("dangling", "dangling.wav")]}
    sf.write(f["good"], noise(1.0), SR, subtype="PCM_16")
    sf.write(f["good2"], noise(1.5, seed=1), SR)
    sf.write(f["stereo44"], noise(2.0, 44100, 2, seed=2), 44100, subtype="PCM_16")
    sf.write(d / "long.wav", noise(3.0, seed=3), SR, subtype="PCM_16")
    raw = (d / "long.wav").read_bytes()
    f["trunc_wav"].write_bytes(raw[: len(raw) // 2])
    sf.write(d / "long.flac", noise(3.0, seed=3), SR)
    raw = (d / "long.flac").read_bytes()
    f["trunc_flac"].write_bytes(raw[: len(raw) // 2])
    f["random_mp3"].write_bytes(np.random.default_rng(4).bytes(4096))
    f["empty"].write_bytes(b"")
    sf.write(f["zero_samples"], np.zeros(0, np.float32), SR, subtype="PCM_16")
    x = noise(0.5)
    x[100] = np.nan
    sf.write(f["nan"], x, SR, subtype="FLOAT")
    os.mkfifo(f["fifo"])
    os.symlink(d / "loop2.wav", f["loop"])
    os.symlink(f["loop"], d / "loop2.wav")
    os.symlink(d / "nowhere.wav", f["dangling"])
    return f


# ---- transcribe: one bad file --------------------------------------------------------------------------------------
BAD_AUDIO = [("trunc_wav", "truncated"), ("trunc_flac", ""), ("random_mp3", ""), ("empty", "empty"),
             ("zero_samples", "zero samples"), ("nan", "NaN"), ("fifo", "not a regular file"),
             ("loop", "symlink"), ("dangling", "not found"), ("missing", "not found"), ("dir", "directory"),
             ("device", "not a regular file")]


def _bad_path(files, name) -> Path:
    return {"missing": files["good"].parent / "missing.wav", "dir": files["good"].parent, "device": Path(os.devnull)}.get(name) or files[name]


@pytest.mark.parametrize("name,needle", BAD_AUDIO)
def test_transcribe_refuses_bad_audio_in_one_line(model_dir, files, name, needle):
    bad = _bad_path(files, name)
    line = clean_error(run("transcribe", model_dir, bad), bad)
    assert needle in line


@pytest.mark.parametrize("name,needle", BAD_AUDIO[:3] + BAD_AUDIO[6:8])
def test_stream_refuses_bad_audio_in_one_line(model_dir, files, name, needle):
    bad = _bad_path(files, name)
    line = clean_error(run("stream", model_dir, bad, "--fast"), bad)
    assert needle in line


def test_transcribe_outputs_every_good_file_and_fails_at_the_end(model_dir, files, rec):
    """Bad files among good ones: each good file printed (its right text), each bad one named on stderr, exit 2."""
    good = [files["good"], files["good2"], files["stereo44"]]
    args = [good[0], files["trunc_wav"], good[1], files["random_mp3"], good[2]]
    r = run("transcribe", model_dir, *args, "--batch-size", "2")
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2 and "Traceback" not in r.output
    expected = [f"{t.id}\t{t.text}" for t in (rec.transcribe(str(g)) for g in good)]
    assert r.stdout.splitlines() == expected
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and str(files["trunc_wav"]) in errors[0] and str(files["random_mp3"]) in errors[1]


def test_transcribe_json_is_strict_json(model_dir, files):
    r = ok(run("transcribe", model_dir, files["good"], files["stereo44"], "--json"))
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON output")) for line in r.stdout.splitlines()]
    assert [Path(x["id"]).name for x in rows] == ["good.wav", "stereo44.wav"]
    assert rows[1]["duration"] == pytest.approx(2.0, abs=1e-3)


# ---- streamed reading equals whole-file reading --------------------------------------------------------------------
def test_block_reading_and_resampling_equal_the_whole_file(tmp_path):
    import soxr

    from malsori.audio import iter_audio, load_audio

    x = noise(7.3, 44100, 2, seed=5)
    sf.write(tmp_path / "a.flac", x, 44100)
    ref = soxr.resample(sf.read(tmp_path / "a.flac", dtype="float32")[0].mean(axis=1), 44100, SR, quality="HQ")
    blocks = list(iter_audio(tmp_path / "a.flac", block_seconds=0.37))
    assert len(blocks) > 10
    got = np.concatenate(blocks)
    assert len(got) == len(ref) and np.abs(got - ref).max() < 1e-6
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac"), ref, atol=1e-6)


def test_long_file_transcribed_in_blocks_equals_the_in_memory_result(rec, tmp_path):
    """A 70 s 44.1 kHz file (three 30 s segments) read in blocks decodes exactly as its whole waveform does."""
    from malsori.audio import load_audio

    t = np.arange(int(70 * 44100)) / 44100
    x = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.3 * t) > -0.5)).astype(np.float32)
    x += noise(70, 44100, seed=6) * 0.2
    sf.write(tmp_path / "long.wav", x, 44100, subtype="PCM_16")
    streamed = rec.transcribe(str(tmp_path / "long.wav"), batch_size=1)
    whole = rec.transcribe_waves([load_audio(tmp_path / "long.wav")], batch_size=1)[0]
    assert streamed.tokens == whole.tokens and streamed.text == whole.text
    assert streamed.duration == pytest.approx(70.0, abs=1e-3)


# ---- manifests ---------------------------------------------------------------------------------------------------
def _line(uid="u1", audio="good.wav", text="hello", **extra) -> str:
    return json.dumps({"id": uid, "audio": audio, "text": text, "duration": 1.0, **extra})


def _manifest(folder: Path, lines: list[str], name="m.jsonl", bom=False) -> Path:
    p = folder / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "".join(line + "\n" for line in lines).encode())
    return p


@pytest.fixture
def mdir(tmp_path, files) -> Path:
    """A folder holding a good audio file for manifests to point at."""
    (tmp_path / "good.wav").write_bytes(files["good"].read_bytes())
    return tmp_path


def test_bom_on_the_first_line_is_accepted(mdir):
    from malsori.data.manifest import read_manifest

    m = read_manifest(_manifest(mdir, [_line("a"), _line("b")], bom=True))
    assert [u.id for u in m] == ["a", "b"] and not m.skipped


BAD_LINES = [
    ("offset_text", _line("bad", offset="soon"), "offset"),
    ("duration_text", json.dumps({"id": "bad", "audio": "good.wav", "text": "x", "duration": "long"}), "duration"),
    ("duration_nan", '{"id": "bad", "audio": "good.wav", "text": "x", "duration": NaN}', "NaN"),
    ("extra_nan", '{"id": "bad", "audio": "good.wav", "text": "x", "duration": 1.0, "snr": Infinity}', "Infinity"),
    ("text_null", json.dumps({"id": "bad", "audio": "good.wav", "text": None}), "text"),
    ("text_list", json.dumps({"id": "bad", "audio": "good.wav", "text": ["a", "b"]}), "text"),
    ("id_null", json.dumps({"id": None, "audio": "good.wav", "text": "x"}), "id"),
    ("id_list", json.dumps({"id": [1], "audio": "good.wav", "text": "x"}), "id"),
    ("audio_null", json.dumps({"id": "bad", "audio": None, "text": "x"}), "audio"),
    ("long_text", _line("bad", text="word " * 30_000), "transcript"),
]


@pytest.mark.parametrize("name,bad,needle", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_manifest_line_is_a_counted_skip_or_a_strict_error(model_dir, mdir, name, bad, needle):
    man = _manifest(mdir, [_line("a"), bad, _line("b")])
    r = ok(run("eval", model_dir, man, "--report", mdir / "r.tsv"))
    assert "(1 skipped)" in r.stdout
    assert "None" not in (mdir / "r.tsv").read_text() and "bad" not in (mdir / "r.tsv").read_text()
    line = clean_error(run("eval", model_dir, man, "--strict", "--report", mdir / "r.tsv"), f"{man}:2")
    assert needle in line


def test_a_huge_line_is_refused_in_bounded_memory(mdir):
    """A line past the cap is skipped without reading it whole (the reader holds at most the cap in memory)."""
    from malsori.data import manifest as mm

    with open(mdir / "big.jsonl", "w") as f:
        f.write(_line("a") + "\n")
        f.write('{"id": "big", "audio": "good.wav", "text": "' + "x" * (3 * mm.MAX_LINE_BYTES) + '"}\n')
        f.write(_line("b") + "\n")
    m = mm.read_manifest(mdir / "big.jsonl")
    assert [u.id for u in m] == ["a", "b"] and m.skipped[0][0] == 2 and "longer than" in m.skipped[0][1]


@pytest.mark.parametrize("kind,needle", [("dir", "directory"), ("device", "not a regular file"), ("missing", "not found")])
def test_eval_names_a_manifest_that_is_not_a_file(model_dir, tmp_path, kind, needle):
    man = {"dir": tmp_path, "device": Path(os.devnull), "missing": tmp_path / "none.jsonl"}[kind]
    assert needle in clean_error(run("eval", model_dir, man, "--report", tmp_path / "r.tsv"), man)


def test_import_skips_truncated_audio_by_name(mdir, files):
    (mdir / "trunc.wav").write_bytes(files["trunc_wav"].read_bytes())
    man = _manifest(mdir, [_line("a"), _line("t", audio="trunc.wav")])
    r = ok(run("data", "import", "jsonl", man, mdir / "out.jsonl"))
    assert "1 skipped" in r.stdout and "trunc.wav" in r.stderr and "truncated" in r.stderr
    clean_error(run("data", "import", "jsonl", man, mdir / "out2.jsonl", "--strict"), "trunc.wav", "truncated")


def test_no_nan_is_written_to_json(tmp_path):
    from malsori.data.manifest import Utterance, atomic_write_json, write_manifest
    from malsori.errors import MalsoriError

    with pytest.raises(MalsoriError, match="duration"):
        write_manifest(tmp_path / "m.jsonl", [Utterance("a", "a.wav", "x", duration=math.nan)])
    with pytest.raises(MalsoriError, match="x.json"):
        atomic_write_json(tmp_path / "x.json", {"wer": math.inf})
    assert not list(tmp_path.iterdir())


def test_import_refuses_nan_from_a_source_manifest(mdir):
    man = _manifest(mdir, [_line("a"), '{"id": "n", "audio": "good.wav", "text": "x", "duration": NaN}'])
    r = ok(run("data", "import", "jsonl", man, mdir / "out.jsonl"))
    text = (mdir / "out.jsonl").read_text()
    assert "NaN" not in text and len(text.splitlines()) == 1 and "1 skipped" in r.stdout


# ---- eval --------------------------------------------------------------------------------------------------------
def test_eval_scores_the_good_utterances(model_dir, mdir, rec):
    man = _manifest(mdir, [_line("a", text="hello"), _line("b", audio="missing.wav")])
    r = ok(run("eval", model_dir, man, "--report", mdir / "r.tsv"))
    assert "(1 skipped)" in r.stdout and len((mdir / "r.tsv").read_text().splitlines()) == 2
    hyp = rec.transcribe(str(mdir / "good.wav")).text
    assert (mdir / "r.tsv").read_text().splitlines()[1].endswith("\thello\t" + hyp)


def test_eval_with_no_usable_utterance_is_an_error(model_dir, mdir):
    man = _manifest(mdir, [_line("a", audio="missing.wav"), '{"id": 1}'])
    clean_error(run("eval", model_dir, man, "--report", mdir / "r.tsv"), man, "no usable")
    assert not (mdir / "r.tsv").exists()


def test_eval_refuses_a_negative_limit(model_dir, mdir):
    man = _manifest(mdir, [_line("a"), _line("b")])
    clean_error(run("eval", model_dir, man, "--limit", "-1"), "--limit")


def test_eval_checks_the_report_path_before_decoding(model_dir, mdir, monkeypatch):
    from malsori.pretrained import Recognizer

    calls = []
    monkeypatch.setattr(Recognizer, "_decode", lambda self, *a: calls.append(1) or [])
    (mdir / "afile").write_text("x")
    man = _manifest(mdir, [_line("a")])
    clean_error(run("eval", model_dir, man, "--report", mdir / "afile" / "r.tsv"), mdir / "afile")
    assert not calls


def test_eval_names_a_resolved_path_outside_the_manifest_folder(model_dir, mdir, files):
    sub = mdir / "sub"
    sub.mkdir()
    man = _manifest(sub, [_line("a", audio="../good.wav"), _line("b", audio="../nowhere/x.wav")])
    clean_error(run("eval", model_dir, man, "--strict", "--report", mdir / "r.tsv"), str(mdir / "nowhere" / "x.wav"))
    r = ok(run("eval", model_dir, man, "--report", mdir / "r.tsv"))
    assert "(1 skipped)" in r.stdout


# ---- training data --------------------------------------------------------------------------------------------------
TINY = ["model.conformer.d_model=32", "model.conformer.num_layers=1", "model.conformer.num_heads=2",
        "model.conformer.subsampling_channels=4", "max_steps=2", "progress=false", "data.valid="]


@pytest.mark.parametrize("case", ["no_duration", "all_unreadable", "too_long", "usable_ones_unreadable"])
def test_training_on_no_usable_utterance_is_an_error(mdir, case):
    no_duration = [json.dumps({"id": f"u{i}", "audio": "good.wav", "text": "hello"}) for i in range(4)]
    unreadable = [_line(f"x{i}", audio="missing.wav") for i in range(4)]
    lines = {"no_duration": no_duration, "all_unreadable": unreadable, "too_long": [_line(f"u{i}") for i in range(4)],
             "usable_ones_unreadable": no_duration[:1] + unreadable}[case]
    man = _manifest(mdir, lines)
    extra = ["batch.max_duration=0.5"] if case == "too_long" else []
    r = run("train", "conformer_ctc_demo", f"data.train={man}", f"out={mdir / 'exp'}", *TINY, *extra)
    clean_error(r, "missing.wav" if "unreadable" in case else man)
    assert not (mdir / "exp" / "model").exists()


@pytest.mark.parametrize("workers", [0, 1])  # a loader worker's error must come back as the same one line
def test_training_counts_unreadable_audio_and_strict_refuses_it(mdir, workers):
    man = _manifest(mdir, [_line(f"u{i}") for i in range(6)] + [_line("bad", audio="missing.wav")])
    loader = f"batch.num_workers={workers}"
    r = ok(run("train", "conformer_ctc_demo", f"data.train={man}", f"out={mdir / 'exp'}", *TINY, loader, "max_steps=0", "max_epochs=1"))
    assert "1 utterance" in r.output and "missing.wav" in r.output
    r = run("train", "conformer_ctc_demo", f"data.train={man}", f"out={mdir / 'exp2'}", *TINY, loader, "data.strict=true")
    clean_error(r, "missing.wav")


# ---- files follow the umask --------------------------------------------------------------------------------------
def test_written_files_follow_the_umask(tmp_path):
    from malsori.audio import save_audio
    from malsori.data.manifest import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        save_audio(tmp_path / "a.flac", np.zeros(160, np.float32))
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.flac").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


# ---- disk full while writing a model folder -----------------------------------------------------------------------
def test_disk_full_while_writing_the_model_keeps_the_previous_one(mdir, monkeypatch):
    import errno

    import malsori.pretrained

    man = _manifest(mdir, [_line(f"u{i}") for i in range(4)])
    args = ("train", "conformer_ctc_demo", f"data.train={man}", f"out={mdir / 'exp'}", *TINY)
    ok(run(*args))
    model = mdir / "exp" / "model"
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    save_file = malsori.pretrained.save_file

    def full(tensors, filename):  # half the file reaches the disk, then it is full
        save_file(tensors, filename)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(malsori.pretrained, "save_file", full)
    line = clean_error(run(*args), model)  # the rerun resumes at its last checkpoint and writes the model again
    assert "No space left" in line and "unchanged" in line
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in model.parent.iterdir() if p.name.startswith(".model") or p.name.endswith(".old")) == []


# ---- data synth: an unreadable synth_config.json --------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_synth_names_an_unreadable_config_and_never_advises_deleting(tmp_path, content):
    (tmp_path / "t.txt").write_text("".join(f"sentence number {i} is here\n" for i in range(30)))
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "synth_config.json").write_bytes(content)
    line = clean_error(run("data", "synth", "--out", out, "--text", tmp_path / "t.txt"), out / "synth_config.json", "--out")
    assert "delete" not in line
    assert (out / "synth_config.json").read_bytes() == content


# ---- strict JSON from `lm eval-ngram --json` ----------------------------------------------------------------------
def test_lm_eval_ngram_json_never_writes_nan(tmp_path, monkeypatch):
    from malsori.lm.ngram import Perplexity

    (tmp_path / "t.txt").write_text("a b c\na b\nb c a\n")
    ok(run("lm", "train-ngram", tmp_path / "t.txt", "--out", tmp_path / "lm.arpa"))
    r = ok(run("lm", "eval-ngram", tmp_path / "lm.arpa", tmp_path / "t.txt", "--json"))
    assert math.isfinite(json.loads(r.stdout.splitlines()[0])["ppl"])
    monkeypatch.setattr(Perplexity, "ppl", property(lambda self: float("inf")))
    line = clean_error(run("lm", "eval-ngram", tmp_path / "lm.arpa", tmp_path / "t.txt", "--json"), "t.txt", "ppl")
    assert "Infinity" in line


def test_a_diverged_run_in_the_comparison_is_null_in_strict_json(tmp_path):
    from experiments.compare.runs import training_stats
    from malsori.data.manifest import atomic_write_json

    (tmp_path / "log.csv").write_text("step,elapsed,loss,audio_sec_per_sec\n1,1.0,3.5,10\n2,2.0,nan,10\n")
    stats = training_stats(tmp_path)
    assert stats["final_loss"] is None and stats["diverged"] and stats["curve"] == [[1, 1.0, 3.5]]
    atomic_write_json(tmp_path / "results.json", {"train": stats})
    assert json.loads((tmp_path / "results.json").read_text())["train"]["final_loss"] is None


# ---- model folders with a broken config.json -----------------------------------------------------------------------
@pytest.mark.parametrize("config, needle", [
    ("[1, 2]", "not a JSON object"),
    ('{"format_version": 2, "task": "asr", "model": [1], "features": {}}', "model: expected a mapping"),
    ('{"format_version": "2"}', "format_version '2' is unknown"),
    ('{"format_version": 2, "task": 7}', "unknown task 7"),
])
def test_a_model_folder_with_a_broken_config_is_named_in_one_line(model_dir, files, tmp_path, config, needle):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "config.json").write_text(config)
    assert needle in clean_error(run("transcribe", str(broken), str(files["good"])), "config.json")
