"""Tasks through the one loop: a tiny character GPT on text written here learns (validation perplexity falls) and
resumes exactly; model folders carry format_version, task and a checksum and refuse what does not match, in one
line; speech model folders still transcribe identically after saving and loading."""

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from malsori.errors import MalsoriError
from malsori.pretrained import load_model_dir
from malsori.tasks import load_train_config
from malsori.tasks.lm import LMTrainConfig
from malsori.train import TrainConfig, train

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "she", "he", "our teacher"]
VERBS = ["sees", "likes", "finds", "wants", "paints"]
OBJECTS = ["the ball", "a red apple", "the small house", "some water", "two books"]


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n)]


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("text")
    (d / "train.txt").write_text("\n".join(_sentences(400, 0)) + "\n")
    (d / "valid.txt").write_text("\n".join(_sentences(60, 1)) + "\n")
    return {"train": d / "train.txt", "valid": d / "valid.txt"}


_LM_OVERRIDES = ["data.batch_size=8", "model.gpt.d_model=64", "model.gpt.num_layers=2", "model.gpt.num_heads=2",
                 "model.gpt.context=32", "model.gpt.dropout=0.1", "optim.lr=1e-2", "optim.warmup_steps=10",
                 "optim.schedule=constant", "progress=false", "threads=1", "log_every=1", "average_last=1"]


def _lm_cfg(files, out, *extra) -> LMTrainConfig:
    overrides = [f"out={out}", f"data.train=[{files['train']}]", f"data.valid=[{files['valid']}]", *_LM_OVERRIDES, *extra]
    return load_train_config(None, ["task=lm", *overrides])


def _losses(path: Path) -> dict[int, float]:
    with open(path) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def lm_run(text_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "run"
    train(_lm_cfg(text_files, out, "max_steps=90", "valid_every=30", "checkpoint_every=30", "max_epochs=100"))
    return out


def test_recipe_picks_the_task_config(text_files, tmp_path):
    assert isinstance(load_train_config(None, []), TrainConfig)  # no task: speech, as before
    cfg = _lm_cfg(text_files, tmp_path)
    assert isinstance(cfg, LMTrainConfig) and cfg.model.gpt.context == 32
    with pytest.raises(MalsoriError, match="task: unknown task 'tts'"):
        load_train_config(None, ["task=tts"])
    with pytest.raises(MalsoriError, match="features"):
        load_train_config(None, ["task=lm", "features.num_mel_bins=40"])  # speech sections are not an LM's


def test_tiny_lm_learns_and_is_scored_by_perplexity(lm_run):
    rows = list(csv.DictReader(open(lm_run / "valid.csv")))
    assert {30, 60, 90} <= {int(r["step"]) for r in rows}  # valid_every, and after each epoch (41 batches)
    ppl = [float(r["ppl_token"]) for r in rows]
    assert ppl[-1] < 0.6 * ppl[0] and ppl[-1] < 2.5, ppl  # a uniform guess over the 25 tokens would be 25
    words, tokens = int(rows[0]["words"]), int(rows[0]["tokens"])
    from malsori.text import normalize

    assert words == sum(len(normalize(s).split()) for s in _sentences(60, 1))
    # per word = per token ** (tokens / (words + sentence ends)): the same likelihood over other units
    assert float(rows[-1]["ppl_word"]) == pytest.approx(ppl[-1] ** (tokens / (words + 60)), rel=1e-3)
    log = list(csv.DictReader(open(lm_run / "log.csv")))
    assert "tokens_per_sec" in log[0] and float(log[0]["tokens_per_sec"]) > 0
    config = json.loads((lm_run / "model" / "config.json").read_text())
    assert config["format_version"] == 2 and config["task"] == "lm" and len(config["weights_sha256"]) == 64


def test_lm_run_resumes_exactly_after_a_lost_tail(text_files, tmp_path):
    """The run dies after step 23 with its last checkpoint at 20 (steps 21-23 logged, not saved): resumed, it logs
    the same losses as an uninterrupted run, across epoch boundaries (an epoch here is 5 batches)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    few = [f"data.max_lines=60", "checkpoint_every=10", "max_epochs=100", "data.valid=[]"]
    train(_lm_cfg(text_files, ref, "max_steps=30", *few))
    train(_lm_cfg(text_files, run, "max_steps=23", *few))
    import shutil

    shutil.rmtree(run / "ckpt-00000023")  # what a kill before that checkpoint leaves on disk
    train(_lm_cfg(text_files, run, "max_steps=30", *few))
    steps = [int(r["step"]) for r in csv.DictReader(open(run / "log.csv"))]
    assert steps == list(range(1, 31))  # it went on from step 20's checkpoint; the lost tail's rows 21-23 were replaced
    expected, got = _losses(ref / "log.csv"), _losses(run / "log.csv")
    assert sorted(got) == sorted(expected) == list(range(1, 31))
    assert max(int(r["epoch"]) for r in csv.DictReader(open(ref / "log.csv"))) >= 3
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step


def _cli(*args):
    """Run `malsori ARGS` in this process (a subprocess would spend seconds importing torch each time)."""
    from click.testing import CliRunner

    from malsori.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr + (repr(r.exception) if r.exit_code == 1 else ""))


def test_lm_eval_and_generate_commands(lm_run, text_files):
    model = lm_run / "model"
    r = _cli("lm", "eval", model, text_files["valid"], "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    last = list(csv.DictReader(open(lm_run / "valid.csv")))[-1]  # the same text, scored by the loop at the last step
    assert got["ppl_token"] == pytest.approx(float(last["ppl_token"]), rel=1e-3)
    a = _cli("lm", "generate", model, "--prompt", "The cat", "--seed", "4", "--num", "2", "--top-k", "5")
    b = _cli("lm", "generate", model, "--prompt", "The cat", "--seed", "4", "--num", "2", "--top-k", "5")
    assert a.returncode == 0 and a.stdout == b.stdout, a.stderr
    lines = a.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("the cat ") for line in lines)
    greedy = [_cli("lm", "generate", model, "--prompt", "my friend", "--temperature", "0", "--seed", s).stdout for s in "12"]
    assert greedy[0] == greedy[1] and greedy[0].startswith("my friend ")  # temperature 0: no draw, no seed
    r = _cli("lm", "eval", text_files["train"].parent, text_files["valid"])
    assert r.returncode == 2 and "not a malsori model folder" in r.stderr and "Traceback" not in r.stderr


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line_error(folder: Path, *needles: str) -> str:
    with pytest.raises(MalsoriError) as e:
        load_model_dir(folder)
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


def test_model_folder_refuses_what_does_not_match(lm_run, tmp_path):
    from safetensors.torch import load_file, save_file

    good = lm_run / "model"
    assert load_model_dir(good).task == "lm"
    flipped = _copy(good, tmp_path / "flipped")
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[-100] ^= 0x04  # one bit of one weight
    (flipped / "model.safetensors").write_bytes(bytes(data))
    _one_line_error(flipped, "model.safetensors", "checksum")

    future = _copy(good, tmp_path / "future")
    cfg = json.loads((future / "config.json").read_text())
    (future / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    _one_line_error(future, "config.json", "format_version 99")

    vocab = _copy(good, tmp_path / "vocab")
    (vocab / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 5}))
    _one_line_error(vocab, "tokenizer.json", "vocab_size")

    keys = _copy(good, tmp_path / "keys")  # weights of another shape, checksum updated: names and shapes are checked
    tensors = load_file(str(keys / "model.safetensors"))
    tensors["extra.weight"] = torch.zeros(2)
    del tensors["norm.bias"]
    save_file(tensors, str(keys / "model.safetensors"))
    from malsori.files import sha256_of

    (keys / "config.json").write_text(json.dumps({**cfg, "weights_sha256": sha256_of(keys / "model.safetensors")}))
    _one_line_error(keys, "model.safetensors", "missing keys norm.bias", "unknown keys extra.weight")

    wide = _copy(good, tmp_path / "wide")
    (wide / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "gpt": {**cfg["model"]["gpt"], "d_model": 96}}}))
    _one_line_error(wide, "model.safetensors", "shapes", "embed.weight")


def test_speech_model_folder_round_trip_transcribes_identically(tmp_path):
    """A speech model saved and loaded (format 2) transcribes as the in-memory one; the same folder written in the
    format before tasks (version 1 or none, no checksum) loads too; a speech folder is no LM and vice versa."""
    from malsori.features import Fbank, FbankConfig, GlobalCMVN
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.conformer import ConformerConfig
    from malsori.pretrained import Recognizer, save_model_dir
    from malsori.tokenizer import train_tokenizer

    tok = train_tokenizer("char", ["a quick brown fox jumps over the lazy dog"])
    cfg = ModelConfig(conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, subsampling_channels=4))
    torch.manual_seed(0)
    model = build_model(cfg, 80, tok.vocab_size).eval()
    cmvn = GlobalCMVN(80)
    save_model_dir(tmp_path / "asr", model, cfg, FbankConfig(), tok, cmvn)
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    before = Recognizer(model, tok, Fbank(FbankConfig()), cmvn, "cpu").transcribe(wave)
    after = Recognizer.load(tmp_path / "asr", "cpu").transcribe(wave)
    assert before.tokens and after.tokens == before.tokens and after.score == pytest.approx(before.score, abs=1e-5)
    config = json.loads((tmp_path / "asr" / "config.json").read_text())
    assert config["task"] == "asr" and config["format_version"] == 2
    for version in (1, None):
        old = _copy(tmp_path / "asr", tmp_path / f"v{version}")
        legacy = {k: v for k, v in config.items() if k not in ("task", "weights_sha256", "format_version")}
        (old / "config.json").write_text(json.dumps(legacy if version is None else {**legacy, "format_version": 1}))
        assert Recognizer.load(old, "cpu").transcribe(wave).tokens == before.tokens
    r = _cli("lm", "generate", tmp_path / "asr")
    assert r.returncode == 2 and "not a language model" in r.stderr


def test_lm_run_resumes_exactly_after_sigkill(text_files, tmp_path):
    """`malsori train` of a text task killed mid-epoch between checkpoints, then rerun, logs the same losses."""
    import signal
    import subprocess
    import sys
    import time

    recipe = tmp_path / "lm.yaml"
    recipe.write_text("task: lm\n")

    def start(out):
        args = [sys.executable, "-m", "malsori.cli", "train", recipe, *_LM_OVERRIDES, f"out={out}",
                f"data.train=[{text_files['train']}]", "data.max_lines=120", "max_steps=30", "checkpoint_every=8",
                "max_epochs=100"]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    ref = start(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    run, log = start(tmp_path / "run"), tmp_path / "run" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and max(_losses(log) or [0]) >= 19):
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert 19 <= max(_losses(log)) < 30, "the run must die mid-training (an epoch here is 12 batches)"
    resumed = start(tmp_path / "run")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    expected, got = _losses(tmp_path / "ref" / "log.csv"), _losses(log)
    assert sorted(got) == sorted(expected) == list(range(1, 31))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step
