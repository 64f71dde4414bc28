"""Multi-process training through torchrun, 2 processes on CPU (gloo): each rank trains on its own shard, the loss
of every step equals one process's with the same global batch (2 × 8 blocks = 16 blocks) up to float reduction
order, rank 0 alone writes the run folder and the model folder is the usual one, and a run is resumed only with the
number of processes that made it."""

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.training import RECIPE, TINY

from malsori.data.dataset import BatchConfig, BucketBatchSampler
from malsori.pretrained import load_model_dir
from malsori.tasks import load_train_config
from malsori.train import train

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 2e-5  # |loss difference| per step: the ranks' gradients are averaged in another order than one batch's
WORDS = "red green blue small big old new cat dog bird tree house river stone sees finds likes paints".split()


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    """A text file to train on; beside it, the recipe (the overrides below make the run)."""
    rng = random.Random(3)
    d = tmp_path_factory.mktemp("text")
    (d / "lm.yaml").write_text("task: lm\n")
    (d / "train.txt").write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 7))) for _ in range(300)) + "\n")
    return d / "train.txt"


def _train(text: Path, out: Path, *extra: str) -> Path:
    """The run in this process."""
    return train(load_train_config(text.parent / "lm.yaml", _overrides(text, out, *extra)))


def _overrides(text: Path, out: Path, *extra: str) -> list[str]:
    return [f"out={out}", f"data.train=[{text}]", "data.holdout_every=10", "model.gpt.d_model=32",
            "model.gpt.num_layers=1", "model.gpt.num_heads=2", "model.gpt.context=32", "model.gpt.dropout=0.0",
            "optim.lr=1e-2", "optim.warmup_steps=2", "optim.schedule=constant", "max_steps=8", "max_epochs=1",
            "checkpoint_every=4", "log_every=1", "average_last=2", "progress=false", "threads=1", *extra]


def _torchrun(recipe: Path, *overrides: str) -> SimpleNamespace:
    """`torchrun --standalone --nproc_per_node=2 -m malsori train RECIPE OVERRIDES` with this interpreter, one thread
    a process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "malsori", "train", str(recipe), *overrides]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return SimpleNamespace(returncode=r.returncode, stdout=r.stdout, stderr=r.stderr)


def _losses(run: Path) -> dict[int, float]:
    with open(run / "log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*")}


@pytest.fixture(scope="module")
def runs(text, tmp_path_factory) -> SimpleNamespace:
    """The same 8 steps: two processes with 8 blocks each, and one process with 16."""
    d = tmp_path_factory.mktemp("runs")
    two = _torchrun(text.parent / "lm.yaml", *_overrides(text, d / "two", "data.batch_size=8"))
    assert two.returncode == 0, two.stderr[-3000:]
    _train(text, d / "one", "data.batch_size=16")
    return SimpleNamespace(one=d / "one", two=d / "two", output=two)


def test_ranks_take_distinct_shards_of_equal_size():
    durations = [0.5 + (7 * i % 13) / 10 for i in range(101)]
    cfg = BatchConfig(max_frames=800, num_buckets=3)
    whole = BucketBatchSampler(durations, cfg, seed=1).batches()
    shards = [BucketBatchSampler(durations, cfg, seed=1, rank=r, world_size=3).batches() for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(whole) // 3  # in step: equal counts
    for r, shard in enumerate(shards):
        assert shard == whole[r : 3 * len(shard) : 3]  # batch k of rank r is batch 3k + r of one process
    used = [i for s in shards for b in s for i in b]
    assert len(used) == len(set(used))  # no utterance on two ranks


def test_two_processes_match_one_with_the_same_global_batch(runs):
    one, two = _losses(runs.one), _losses(runs.two)
    assert sorted(one) == sorted(two) == list(range(1, 9))
    assert one[8] < one[1] - 0.3  # it learns, so the steps are not all alike
    for step in one:
        assert abs(one[step] - two[step]) < TOLERANCE, (step, one[step], two[step])
    a, b = load_model_dir(runs.one / "model"), load_model_dir(runs.two / "model")
    assert a.task == b.task == "lm"
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    assert _files(runs.one / "model") == _files(runs.two / "model")


def test_rank_zero_alone_writes_and_prints(runs):
    assert _files(runs.one) == _files(runs.two)  # nothing more in the folder than a one-process run writes
    state = json.loads((runs.two / "ckpt-00000008" / "state.json").read_text())
    assert state["world_size"] == 2
    from safetensors.torch import load_file

    assert sorted(load_file(str(runs.two / "ckpt-00000008" / "rng.safetensors"))) == ["torch_rng", "torch_rng.1"]
    lines = runs.output.stdout.splitlines()
    assert lines.count(f"model: {runs.two / 'model'}") == 1 and sum("2 processes" in line for line in lines) == 1


def test_resume_with_another_number_of_processes_is_refused(runs, text, tmp_path):
    from click.testing import CliRunner

    from malsori.cli import main

    before = {p: p.stat().st_mtime_ns for p in runs.two.rglob("*") if p.is_file()}
    r = CliRunner().invoke(main, ["train", str(text.parent / "lm.yaml"), *_overrides(text, runs.two, "data.batch_size=8", "max_steps=12")])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [
        f"error: {runs.two}: its checkpoints were written by a run of 2 process(es) and this run has 1: resume it with 2 "
        "(torchrun --nproc_per_node / --nnodes, or no torchrun for 1), or use another out="]
    after = {p: p.stat().st_mtime_ns for p in runs.two.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {p: t for p, t in before.items() if p.name != ".lock"}  # refused before writing anything
    one = shutil.copytree(runs.one, tmp_path / "one")  # and the other way: two processes on a one-process run
    r = _torchrun(text.parent / "lm.yaml", *_overrides(text, one, "data.batch_size=16", "max_steps=12"))
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {one}: its checkpoints were written by a run of 1 process(es) and this run has 2: resume it "
                      "with 1 (torchrun --nproc_per_node / --nnodes, or no torchrun for 1), or use another out="], r.stderr[-3000:]
    assert not [line for line in r.stderr.splitlines() if 'File "' in line and "malsori" in line]  # no rank's traceback


@pytest.mark.slow
def test_two_process_run_resumes_exactly_with_dropout_and_accumulation(text, tmp_path):
    """Each rank draws its own dropout and saves its RNG state: killed after its step-4 checkpoint and resumed, a run
    logs the losses of an uninterrupted one; with accumulation (2 × 4 blocks per rank) it also matches one process."""
    extra = ["data.batch_size=4", "optim.accum_grad=2", "model.gpt.dropout=0.1"]
    ref = _torchrun(text.parent / "lm.yaml", *_overrides(text, tmp_path / "ref", *extra))
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = shutil.copytree(tmp_path / "ref", tmp_path / "run")
    shutil.rmtree(run / "ckpt-00000008")
    shutil.rmtree(run / "model")
    r = _torchrun(text.parent / "lm.yaml", *_overrides(text, run, *extra))
    assert r.returncode == 0 and "resuming from ckpt-00000004" in r.stdout, r.stderr[-3000:]
    assert _losses(run) == _losses(tmp_path / "ref")
    one = tmp_path / "one"
    _train(text, one, "data.batch_size=16")
    same = _losses(one)
    nodrop = _torchrun(text.parent / "lm.yaml", *_overrides(text, tmp_path / "nodrop", "data.batch_size=4", "optim.accum_grad=2"))
    assert nodrop.returncode == 0, nodrop.stderr[-3000:]
    for step, loss in _losses(tmp_path / "nodrop").items():
        assert abs(loss - same[step]) < TOLERANCE, step



def test_an_epoch_tail_shorter_than_an_accumulation_is_left_out_so_resume_is_exact(text, tmp_path):
    """13 batches an epoch, 2 per step: 6 steps an epoch, the 13th batch is not trained on (as a rank's share of the
    last batches is not). Its gradient was carried into the next epoch's first step, which no checkpoint holds, so a
    run resumed from an end-of-epoch checkpoint differed; now it logs the losses of an uninterrupted run."""
    extra = ["data.batch_size=16", "optim.accum_grad=2", "max_epochs=3", "model.gpt.dropout=0.1"]
    _train(text, tmp_path / "ref", *extra, "max_steps=18")
    rows = list(csv.DictReader(open(tmp_path / "ref" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0] * 6 + [1] * 6 + [2] * 6
    _train(text, tmp_path / "run", *extra, "max_steps=8")
    shutil.rmtree(tmp_path / "run" / "ckpt-00000008")  # resume from the checkpoint written where epoch 0 ended
    _train(text, tmp_path / "run", *extra, "max_steps=18")
    assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")


@pytest.mark.slow
def test_speech_on_two_processes_matches_one_accumulating_two_batches(tiny_corpus, tmp_path):
    """Speech batches are duration-bucketed lists of utterances of unequal size: rank r's k-th batch is one process's
    batch 2k + r, so two processes take the steps of one process that accumulates 2 batches a step (no dropout and
    no SpecAugment here: their draws differ per rank). The model folder transcribes."""
    from malsori.tasks.asr import TrainConfig

    common = [f"data.train={tiny_corpus['train']}", f"data.valid={tiny_corpus['dev']}", *TINY, "model.conformer.dropout=0",
              "specaug.num_freq_masks=0", "specaug.num_time_masks=0", "max_steps=6", "checkpoint_every=3", "log_every=1",
              "threads=1"]
    r = _torchrun(RECIPE, *common, f"out={tmp_path / 'two'}")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = load_train_config(RECIPE, [*common, f"out={tmp_path / 'one'}", "optim.accum_grad=2"])
    assert isinstance(cfg, TrainConfig)
    train(cfg)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 7))
    for step in one:
        assert abs(one[step] - two[step]) < TOLERANCE * max(1.0, one[step]), (step, one[step], two[step])
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    from malsori.pretrained import Recognizer

    wav = next((tiny_corpus["test"].parent / "audio" / "test").glob("*.flac"))
    assert Recognizer.load(tmp_path / "one" / "model").transcribe(wav).text == Recognizer.load(tmp_path / "two" / "model").transcribe(wav).text
