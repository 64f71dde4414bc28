"""A run folder is never lost or mixed up (issue #17): one trainer per folder, SIGKILL anywhere (mid-epoch, during
validation, while saving a checkpoint or the model) then resume gives the logs, final model and files of an
uninterrupted run, corrupt checkpoints are skipped with a line, a full disk is one line, a moved folder resumes, and
what is written follows the umask."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from malsori.cli import main
from malsori.config import load_config
from malsori.errors import ConfigError, MalsoriError
from malsori.train import TrainConfig, train

from helpers.training import RECIPE, TINY, toy_model_and_optimizer, toy_step

# 40 utterances, 20 steps an epoch: checkpoints every 3 steps, log rows every 4 (and at checkpoints), validation after
# steps 20 and 40, stop at step 50.
SMALL = ["model.conformer.d_model=32", "model.conformer.num_layers=1", "batch.max_frames=2000", "data.max_valid_utts=4",
         "checkpoint_every=3", "log_every=4", "threads=1", "max_steps=50"]
WALL_CLOCK = ("elapsed", "audio_sec_per_sec")

# `malsori train` that SIGKILLs itself at the N-th call of a named function ("pause": waits there until the file RELEASE
# exists), so kill points need no test hooks in the trainer. argv: kill|pause POINT:N RELEASE train ARGS...
DRIVER = r"""
import os, signal, sys, time
import malsori.checkpoint, malsori.pretrained, malsori.tasks.asr, malsori.train
from malsori.cli import main
mode, spec, release = sys.argv[1:4]
point, at = spec.split(":")
module, name = {"step": (malsori.train, "lr_at"), "validation": (malsori.tasks.asr.SpeechTask, "validate"),
                "checkpoint": (malsori.checkpoint, "save_file"), "model": (malsori.pretrained, "save_file")}[point]
original, calls = getattr(module, name), [0]
def wrapper(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(at):
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        while not os.path.exists(release):
            time.sleep(0.05)
    return original(*args, **kwargs)
setattr(module, name, wrapper)
sys.argv = ["malsori", *sys.argv[4:]]
main()
"""


@pytest.fixture(scope="module")
def small(tiny_corpus, tmp_path_factory) -> dict[str, Path]:
    """The first 40 training utterances of the tiny corpus (audio paths made absolute) and its dev set."""
    folder = Path(tiny_corpus["train"]).parent
    lines = Path(tiny_corpus["train"]).read_text().splitlines()[:40]
    rows = [{**json.loads(line), "audio": str(folder / json.loads(line)["audio"])} for line in lines]
    path = tmp_path_factory.mktemp("small") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"train": path, "dev": Path(tiny_corpus["dev"])}


def _overrides(small, out, *extra) -> list[str]:
    return [f"data.train={small['train']}", f"data.valid={small['dev']}", f"out={out}", *TINY, *SMALL, *extra]


def _cfg(small, out, *extra) -> TrainConfig:
    return load_config(TrainConfig, RECIPE, _overrides(small, out, *extra))


def _driver(mode: str, point: str, release: Path, small, out, *extra) -> subprocess.Popen:
    args = [sys.executable, "-c", DRIVER, mode, point, str(release), "train", str(RECIPE), *_overrides(small, out, *extra)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rows(path: Path) -> list[dict]:
    """The log's rows without the wall-clock columns."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*")}


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory) -> Path:
    """An uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(_cfg(small, out))
    return out


def _assert_same_as(run: Path, ref: Path) -> None:
    assert _rows(run / "log.csv") == _rows(ref / "log.csv")
    assert _rows(run / "valid.csv") == _rows(ref / "valid.csv")
    assert (run / "model" / "model.safetensors").read_bytes() == (ref / "model" / "model.safetensors").read_bytes()
    assert _files(run) == _files(ref)  # no temporaries, no extra checkpoints


@pytest.mark.slow
def test_sigkill_at_each_point_then_resume_equals_an_uninterrupted_run(small, reference, tmp_path):
    """Killed mid-epoch, during validation, while writing a checkpoint and while writing the final model (each resume
    is the next killed process); the last resume, in this process, must give the reference's logs, model and files."""
    out, holders = tmp_path / "run", []
    for point, left_behind in [("step:14", None), ("validation:1", None), ("checkpoint:5", ".ckpt-"), ("model:1", ".model.")]:
        run = _driver("kill", point, tmp_path / "never", small, out)
        assert run.wait(timeout=600) == -signal.SIGKILL, (point, run.stderr.read())
        holders.append((run.pid, (out / ".lock").read_text() if (out / ".lock").exists() else ""))
        if left_behind:
            assert any(p.name.startswith(left_behind) for p in out.iterdir()), point
    train(_cfg(small, out))
    _assert_same_as(out, reference)
    steps = [(int(r["step"]), float(r["elapsed"])) for r in csv.DictReader(open(out / "log.csv"))]
    assert [s for s, _ in steps] == sorted({1, *range(3, 51, 3), *range(4, 51, 4), 50})
    assert all(a[1] <= b[1] for a, b in zip(steps, steps[1:])), "elapsed restarted on resume"
    assert all(f"pid {pid} on " in text for pid, text in holders)  # each dead holder's lock file stayed, and never blocked


@pytest.mark.slow
def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_holder(small, reference, tmp_path):
    """The first trainer waits at step 2 while a second `malsori train` on the same folder (spelled another way) is
    refused with one line naming the holder's pid; the first then finishes as if alone."""
    out, release = tmp_path / "run", tmp_path / "release"
    first = _driver("pause", "step:2", release, small, out)
    try:
        deadline = time.time() + 600
        while not (out / "log.csv").is_file() or "\n1," not in (out / "log.csv").read_text():
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "malsori.cli", "train", str(RECIPE),
                                 *_overrides(small, str(out) + "/.")], capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and f"pid {first.pid} on " in second.stderr and "started" in second.stderr
    finally:
        release.touch()
    assert first.wait(timeout=600) == 0, first.stderr.read()
    _assert_same_as(out, reference)


def test_the_lock_refuses_in_process_and_a_stale_lock_file_does_not_block(small, tmp_path):
    from malsori.rundir import RunLock

    out = tmp_path / "run"
    with RunLock(out):
        r = CliRunner().invoke(main, ["train", str(RECIPE), *_overrides(small, out, "max_steps=1")])
        assert r.exit_code == 2 and f"pid {os.getpid()} on " in r.stderr and len(r.stderr.splitlines()) == 1, r.output
        assert not (out / "log.csv").exists()
    (out / ".lock").write_text("pid 999999999 on elsewhere, started 2000-01-01 00:00:00 UTC\n")
    with RunLock(out):  # the kernel's lock, not the file's content, decides
        pass
    (tmp_path / "file").write_text("")
    with pytest.raises(MalsoriError, match="is a file"):
        RunLock(tmp_path / "file").acquire()


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "bad json"])
def test_resume_skips_a_corrupt_newest_checkpoint_and_says_so(tmp_path, damage):
    from malsori.checkpoint import latest_checkpoint, load_checkpoint, resume_checkpoint, save_checkpoint

    m, o = toy_model_and_optimizer()
    toy_step(m, o)
    save_checkpoint(tmp_path, 1, m, o, {"epoch": 0, "pos": 1})
    good = {k: v.clone() for k, v in m.state_dict().items()}
    toy_step(m, o)
    newest = save_checkpoint(tmp_path, 2, m, o, {"epoch": 0, "pos": 2})
    if damage == "bit flip":
        data = bytearray((newest / "model.safetensors").read_bytes())
        data[-3] ^= 0x10  # inside the last tensor's bytes: the file still parses
        (newest / "model.safetensors").write_bytes(bytes(data))
    elif damage == "truncated":
        with open(newest / "optimizer.safetensors", "r+b") as f:
            f.truncate(40)
    else:
        (newest / "state.json").write_text('{"step": 2, "epo')
    lines = []
    m2, o2 = toy_model_and_optimizer()
    ckpt, state = resume_checkpoint(tmp_path, m2, o2, lines.append)
    assert ckpt.name == "ckpt-00000001" and state["pos"] == 1
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in good.items())
    assert len(lines) == 1 and "ckpt-00000002" in lines[0] and "resuming from ckpt-00000001" in lines[0]
    assert (tmp_path / "corrupt-ckpt-00000002").is_dir() and latest_checkpoint(tmp_path).name == "ckpt-00000001"
    if damage == "bit flip":  # loading that one folder by name refuses too
        with pytest.raises(MalsoriError, match="checksum"):
            load_checkpoint(tmp_path / "corrupt-ckpt-00000002", m2, o2)


def test_training_resumes_past_a_bit_flipped_checkpoint(small, reference, tmp_path, capsys):
    """A run stopped at step 7 whose newest checkpoint (step 7) is then bit-flipped resumes from step 6 and still ends
    exactly like the uninterrupted run."""
    out = tmp_path / "run"
    train(_cfg(small, out, "max_steps=7"))
    data = bytearray((out / "ckpt-00000007" / "model.safetensors").read_bytes())
    data[-5] ^= 0x01
    (out / "ckpt-00000007" / "model.safetensors").write_bytes(bytes(data))
    capsys.readouterr()
    train(_cfg(small, out))
    said = capsys.readouterr().out
    assert "ckpt-00000007 is corrupt" in said and "resuming from ckpt-00000006" in said
    assert _rows(out / "log.csv") == _rows(reference / "log.csv")
    assert (out / "model" / "model.safetensors").read_bytes() == (reference / "model" / "model.safetensors").read_bytes()


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(small, tmp_path, monkeypatch):
    import malsori.checkpoint as ck

    out, real, calls = tmp_path / "run", ck.save_file, []

    def fill_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # the second checkpoint
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(ck, "save_file", fill_up)
    r = CliRunner().invoke(main, ["train", str(RECIPE), *_overrides(small, out, "data.valid=")])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, (r.output, r.exception)
    assert "No space left on device" in r.stderr and "ckpt-00000003, is intact" in r.stderr
    assert [p.name for p in out.iterdir() if "ckpt" in p.name] == ["ckpt-00000003"]
    assert ck.latest_checkpoint(out).name == "ckpt-00000003" and ck._read_checkpoint(out / "ckpt-00000003", True)


def test_a_moved_folder_resumes_with_its_paths_spelled_another_way(small, reference, tmp_path, monkeypatch):
    """Stopped at step 9, moved, resumed with out= ending in a slash, the manifest through a relative path and the
    dev set through a link: the run ends like the uninterrupted one. A real difference is refused without advising to
    delete the run."""
    train(_cfg(small, tmp_path / "before", "max_steps=9"))
    (tmp_path / "before").rename(tmp_path / "after")
    (tmp_path / "dev.jsonl").symlink_to(small["dev"])
    monkeypatch.chdir(small["train"].parent)
    moved = {"train": Path("train.jsonl"), "dev": tmp_path / "dev.jsonl"}
    with pytest.raises(ConfigError) as e:
        train(_cfg(moved, str(tmp_path / "after") + "/", "optim.lr=0.1"))
    assert "optim.lr: 0.002 → 0.1" in str(e.value) and "delete" not in str(e.value)
    train(_cfg(moved, str(tmp_path / "after") + "/"))
    assert _rows(tmp_path / "after" / "log.csv") == _rows(reference / "log.csv")
    assert (tmp_path / "after" / "model" / "model.safetensors").read_bytes() == (reference / "model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_run_files_follow_the_umask(small, tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        train(_cfg(small, tmp_path / "run", "max_steps=3", "data.valid="))
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / "run").rglob("*")}
    assert {"run/model/model.safetensors", "run/model/tokenizer.json", "run/ckpt-00000003/model.safetensors", "run/latest"} <= set(modes)
    assert {k: v for k, v in modes.items() if v != (dir_mode if (tmp_path / k).is_dir() else file_mode)} == {}


def test_step_log_drops_rows_after_the_checkpoint_a_torn_row_and_replaces_a_repeated_step(tmp_path):
    from malsori.rundir import StepLog

    path = tmp_path / "log.csv"
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.")  # a kill cut the last row short
    log = StepLog(path, ["step", "loss"], after=2)
    assert path.read_text() == "step,loss\n1,0.5\n2,0.4\n"
    log.write({"step": 3, "loss": "0.31"})
    log.write({"step": 3, "loss": "0.32"})  # logged again (validation repeated after a kill): replaces
    assert path.read_text() == "step,loss\n1,0.5\n2,0.4\n3,0.32\n"
    StepLog(path, ["step", "loss"], after=3)
    assert path.read_text().endswith("3,0.32\n")
    StepLog(path, ["step", "loss"], after=0)  # a fresh run in a folder whose first checkpoint was never written
    assert path.read_text() == "step,loss\n"


def test_config_differences_compare_what_paths_name(tmp_path):
    from malsori.rundir import config_differences

    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    old = {"out": "a", "data": {"train": str(tmp_path / "d"), "valid": "", "sources": [{"weight": 1.0}]}, "lr": 1.0}
    now = {"out": "/b/", "data": {"train": str(tmp_path / "link") + "/", "valid": ".", "sources": [{"weight": 2.0}]}, "lr": 1.0}
    assert config_differences(old, now, ("out",)) == ['data.sources.0.weight: 1.0 → 2.0', 'data.valid: "" → "."']
