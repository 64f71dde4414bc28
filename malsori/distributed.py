"""Multi-process training under torchrun: which process this is, its device, and the few collective steps the loop
needs to keep the processes in step: work done by one rank while the others wait, errors that stop every rank with
one message, and checks that a run folder is shared and resumed with the number of processes that made it.

One writer: rank 0 holds the run folder's lock (`malsori.rundir`) and writes everything in it; the other ranks only
read what it wrote (tokenizer, CMVN, checkpoints), after checking that they see the lock rank 0 holds.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from malsori.checkpoint import latest_checkpoint
from malsori.device import check_device
from malsori.errors import ConfigError, MalsoriError
from malsori.rundir import LOCK_NAME

T = TypeVar("T")
# How long ranks wait for each other at a step one rank does alone (validation, a checkpoint, building the task).
WAIT = timedelta(hours=2)


class StoppedWithPeer(MalsoriError):
    """Another rank stopped with an error, which it prints; this rank ends with the same exit status, silently."""

    printed_elsewhere = True


@dataclass
class Processes:
    """This process's place among torchrun's processes (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0  # index among all processes (RANK)
    world: int = 1  # number of processes (WORLD_SIZE)
    local_rank: int = 0  # index among this machine's processes (LOCAL_RANK): picks the GPU
    control: Any = None  # a gloo process group for the loop's own collectives (CPU objects; the default group may be NCCL)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    def together(self, work: Callable[[], T]) -> T:
        """Run `work` on this rank, then wait for every rank to finish its own; if it raised on any rank, every rank
        stops: a rank that failed raises its error, the others wait for it to end (so its message is printed once)
        and raise StoppedWithPeer."""
        try:
            result, failed = work(), None
        except Exception as e:  # noqa: BLE001 -- every error must reach the other ranks, or they wait forever
            result, failed = None, e
        if self.world > 1:
            errors: list[str | None] = [None] * self.world
            dist.all_gather_object(errors, None if failed is None else f"{type(failed).__name__}: {failed}", group=self.control)
            first = next(((r, e) for r, e in enumerate(errors) if e is not None), None)
            if failed is None and first is not None:
                _wait_for_exit(self)
                raise StoppedWithPeer(f"rank {first[0]} stopped ({first[1]})")
        if failed is not None:
            raise failed
        return result

    def on_main(self, work: Callable[[], T]) -> T | None:
        """`work` done by rank 0 alone while the others wait (they get None): a checkpoint, a validation."""
        return self.together(lambda: work() if self.main else None)

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, by rank (on every rank)."""
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value, group=self.control)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64), e.g. of the loss and batch counts of a log window."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.control)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on one (a stop decided by one rank's clock)."""
        return self.sum([float(flag)])[0] > 0

    def end(self) -> None:
        """Leave the process group (after the last collective)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _wait_for_exit(procs: Processes) -> None:
    """Block until a failed rank has ended: it never joins this barrier, so the barrier returns an error when its
    process exits (or torchrun ends this one first)."""
    try:
        dist.barrier(group=procs.control)
    except Exception:  # noqa: BLE001 -- the peer's exit closes the group: that is the signal
        pass


def device_for(name: str, local_rank: int, world: int) -> torch.device:
    """The device of the recipe's `device` for this process: `auto` and `cuda` take GPU LOCAL_RANK (mod the count)
    when CUDA is present; one numbered GPU for several processes is refused."""
    check_device(name)
    if name.startswith("cuda:") and world > 1:
        raise ConfigError(f"device={name}: names one GPU for all {world} processes; use device=cuda or auto (each process "
                          "takes the GPU of its LOCAL_RANK) and CUDA_VISIBLE_DEVICES to choose the GPUs")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    return torch.device("cpu" if name == "auto" else name)


def start(device_name: str) -> tuple[Processes, torch.device]:
    """This process's place (from torchrun's RANK, WORLD_SIZE and LOCAL_RANK) and device; with more than one process,
    joins the process group: NCCL when the device is a GPU, gloo on CPU, plus a gloo group for the loop's own steps."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = device_for(device_name, local_rank, world)
    if world == 1:
        return Processes(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    control = dist.new_group(backend="gloo", timeout=WAIT)  # CPU objects, and the long waits of one-rank steps
    return Processes(dist.get_rank(), world, local_rank, control), device


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank `rank` after the (identical) model initialization: its own dropout and masks."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def lock_line(out: Path) -> str:
    """What rank 0's lock file says (pid, host, start time): the others check they read the same."""
    return (out / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip()


def check_shared_lock(out: Path, expected: str) -> None:
    """On a rank other than 0: refuse to go on unless `out` is the folder rank 0 locked, seen through a filesystem
    both share (the same lock line, and the lock held)."""
    path = out / LOCK_NAME
    where = "out= must be a folder every node sees (a shared filesystem), the same path on each"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise MalsoriError(f"{path}: this rank cannot see rank 0's run-folder lock ({e.strerror}); {where}") from None
    try:
        seen = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if seen != expected:
            raise MalsoriError(f"{path}: this rank reads '{seen}', not rank 0's lock '{expected}'; {where}")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # held by rank 0, as it should be
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise MalsoriError(f"{path}: nobody holds the run folder's lock, though rank 0 should; {where}")
    finally:
        os.close(fd)


def check_world_size(out: Path, world: int) -> None:
    """Refuse to resume a run's checkpoints with another number of processes than the one that wrote them (a
    position in an epoch counts batches per rank, and a step's global batch is per-rank batch × processes)."""
    ckpt = latest_checkpoint(out) if out.is_dir() else None
    if ckpt is None:
        return
    try:
        saved = json.loads((ckpt / "state.json").read_text()).get("world_size")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return  # a corrupt checkpoint: resuming sets it aside and checks the one it resumes from
    if saved is not None and saved != world:
        raise ConfigError(f"{out}: its checkpoints were written by a run of {saved} process(es) and this run has {world}: "
                          f"resume it with {saved} (torchrun --nproc_per_node / --nnodes, or no torchrun for 1), or use another out=")
