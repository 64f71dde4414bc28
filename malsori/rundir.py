"""A training run's folder kept whole: one trainer at a time (a lock the kernel drops on any exit), the temporaries a
killed run left removed at start, logs keyed by step that equal an uninterrupted run's after any kill and resume, and
a run's identity compared by what its settings name (resolved paths), never by the literal `out=` text.
"""

from __future__ import annotations

import csv
import fcntl
import functools
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from malsori.data.manifest import atomic_write_text
from malsori.errors import MalsoriError

LOCK_NAME = ".lock"
# What a killed save leaves in a run folder: checkpoint and model folders being written, a model folder being replaced,
# files of atomic_write_text (logs, `latest`, configs, tokenizer).
TEMPORARIES = (".ckpt-*", ".model.*", "model.old", ".*.tmp", "tokenizer/.*.tmp")


class RunFolderBusy(MalsoriError):
    """Another trainer holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder: `flock` on OUT/.lock, which holds the holder's pid, host and start time for
    the message that refuses a second trainer. The kernel releases it when the holder exits in any way (SIGKILL
    included), so a file left with a dead pid never blocks."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise MalsoriError(f"out={self.folder}: is a file, not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise MalsoriError(f"{self.path}: cannot open the run folder's lock ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "holder still starting"
            os.close(fd)
            if isinstance(e, BlockingIOError):
                raise RunFolderBusy(f"{self.folder}: another trainer is using this folder ({holder}); "
                                    "wait for it to end, or use another out=") from None
            raise MalsoriError(f"{self.path}: cannot lock the run folder ({e.strerror})") from None
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale holder in the file once the run has ended normally
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete what killed saves left in a run folder (call it holding the folder's lock); returns their names."""
    folder = Path(folder)
    removed = []
    for pattern in TEMPORARIES:
        for p in sorted(folder.glob(pattern)):
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(str(p.relative_to(folder)))
    return removed


def with_run_lock(train: Callable) -> Callable:
    """Decorates `train(cfg)`: the main process (RANK 0) holds the lock on cfg.out for the whole call, and first removes
    the temporaries a killed run left there."""

    @functools.wraps(train)
    def locked(cfg, *args, **kwargs):
        if int(os.environ.get("RANK", "0")) != 0:
            return train(cfg, *args, **kwargs)
        with RunLock(cfg.out) as lock:
            removed = remove_temporaries(lock.folder)
            if removed:
                tqdm.write(f"removed what an interrupted run left in {lock.folder}: {', '.join(removed)}")
            return train(cfg, *args, **kwargs)

    return locked


class StepLog:
    """A CSV log of rows keyed by `step` that equals an uninterrupted run's after any kill and resume.

    Opening it for a run resumed at step `after` drops the rows logged after that step (they are computed again) and a
    last row a kill cut short; rows are then appended and fsynced one by one. The file is rewritten whole (temp +
    rename) only when opened and when a step already logged is logged again (a validation repeated after a kill)."""

    def __init__(self, path: str | os.PathLike, fields: list[str], after: int, enabled: bool = True):
        self.path, self.fields, self.enabled = Path(path), list(fields), enabled
        self.last = after
        if enabled:
            self._rewrite([row for step, row in self._read() if step <= after])

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        step = int(row["step"])
        try:
            if step <= self.last:
                self._rewrite([r for s, r in self._read() if s < step] + [row])
            else:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(self._lines([row]))
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            raise MalsoriError(f"{self.path}: cannot write the log ({e.strerror})") from None
        self.last = step

    def _read(self) -> list[tuple[int, dict]]:
        """(step, row) of the complete rows: a last line without its newline (cut by a kill) is left out, and so is a
        row without an integer step."""
        try:
            text = self.path.read_text(encoding="utf-8").replace("\r\n", "\n")
        except FileNotFoundError:
            return []
        rows = []
        for row in csv.DictReader(text.split("\n")[:-1]):
            try:
                rows.append((int(row["step"]), row))
            except (KeyError, TypeError, ValueError):
                continue
        return rows

    def _lines(self, rows: list[dict]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerows([row.get(k, "") for k in self.fields] for row in rows)
        return buf.getvalue()

    def _rewrite(self, rows: list[dict]) -> None:
        try:
            atomic_write_text(self.path, ",".join(self.fields) + "\n" + self._lines(rows))
        except OSError as e:
            raise MalsoriError(f"{self.path}: cannot write the log ({e.strerror})") from None


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return {k: v for i, sub in enumerate(value) for k, v in _flatten(sub, f"{prefix}{i}.").items()}
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def _same_path(a, b) -> bool:
    return (isinstance(a, str) and isinstance(b, str) and a != "" and b != "" and os.path.exists(a)
            and os.path.realpath(a) == os.path.realpath(b))


def config_differences(old: dict, now: dict, may_change: Iterable[str] = ()) -> list[str]:
    """The settings in which two configs of one run differ, as `dotted.name: old → new`, leaving out the top-level
    names in `may_change`. Strings naming the same existing file or folder are equal (relative or absolute, a trailing
    slash, a link), so only what a setting names is compared, not how it was written."""
    a, b, skip = _flatten(old), _flatten(now), set(may_change)
    shown = lambda v: "(none)" if v is None else json.dumps(v, default=str)  # noqa: E731
    return [f"{k}: {shown(a.get(k))} → {shown(b.get(k))}" for k in sorted(set(a) | set(b))
            if k.split(".")[0] not in skip and a.get(k) != b.get(k) and not _same_path(a.get(k), b.get(k))]
