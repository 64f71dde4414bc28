"""Training checkpoints as folders of safetensors + JSON (never pickles), written atomically, and checkpoint averaging.

A checkpoint `ckpt-<step>/` holds model.safetensors, optimizer.safetensors, rng.safetensors (each training process's
RNG state) and state.json (step, epoch, position, number of processes, optimizer hyper-parameters, the tensor files'
SHA-256). It is written under a temporary name and
renamed into place, and the `latest` pointer is replaced atomically after it, so a kill at any moment leaves the last
good checkpoint intact; a checkpoint corrupted later (a bit flip, a truncated copy) fails its checksum, and resuming
falls back to the newest one that reads back intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from malsori.data.manifest import atomic_write_text
from malsori.errors import MalsoriError
from malsori.files import follow_umask, sha256_of, strict_json
from malsori.nn.load import load_state_dict_strict, upgrade_keys

TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


class CorruptCheckpoint(MalsoriError):
    """A checkpoint's file is unreadable, truncated, or differs from the checksum stored when it was written."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: corrupt checkpoint ({reason})")
        self.reason = reason


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        scalars[str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().contiguous().clone()
            else:
                scalars[str(idx)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(s) for i, s in meta["scalars"].items()}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(exp_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, keep_last: int = 5,
                    rng_states: list[torch.Tensor] | None = None) -> Path:
    """Write ckpt-<step>/ atomically, point `latest` at it, and prune all but the newest `keep_last`. A failed write
    (disk full) leaves the previous checkpoints as they were and is one MalsoriError. `rng_states`: every rank's
    torch RNG state in multi-process training (default: this process's)."""
    exp_dir = Path(exp_dir)
    final = exp_dir / f"ckpt-{step:08d}"
    tmp = None
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=exp_dir, prefix=f".ckpt-{step:08d}."))
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rngs = rng_states or [torch.get_rng_state()]
        save_file({_rng_key(r): s for r, s in enumerate(rngs)}, str(tmp / "rng.safetensors"))
        sums = {name: sha256_of(tmp / name) for name in TENSOR_FILES}
        (tmp / "state.json").write_text(strict_json({**state, "step": step, "optimizer": opt_meta, "sha256": sums},
                                                    str(final / "state.json"), indent=1), encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        follow_umask(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(exp_dir / "latest", final.name + "\n")
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(exp_dir) if exp_dir.is_dir() else None
        kept = f"the last good checkpoint, {prev.name}, is intact" if prev else "there is no earlier checkpoint"
        raise MalsoriError(f"{final}: cannot write checkpoint ({e.strerror or e}); {kept}") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(exp_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(exp_dir: Path) -> list[Path]:
    """Complete checkpoints (state.json present), oldest first."""
    return sorted(p for p in Path(exp_dir).glob("ckpt-*") if p.is_dir() and (p / "state.json").is_file())


def latest_checkpoint(exp_dir: Path) -> Path | None:
    """The checkpoint `latest` points at, or the newest complete one if the pointer is missing or stale."""
    ptr = Path(exp_dir) / "latest"
    if ptr.is_file():
        cand = Path(exp_dir) / ptr.read_text().strip()
        if (cand / "state.json").is_file():
            return cand
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1] if ckpts else None


def _read_state(path: Path) -> dict:
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpoint(path, f"state.json: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or not isinstance(state.get("optimizer"), dict):
        raise CorruptCheckpoint(path, "state.json: not a checkpoint state (no step or optimizer)")
    return state


def _read_tensors(path: Path, name: str, state: dict) -> dict[str, torch.Tensor]:
    """A tensor file of the checkpoint, checked against its stored SHA-256 (checkpoints written before checksums
    existed are read as they are)."""
    try:
        if "sha256" in state and sha256_of(path / name) != state["sha256"].get(name):
            raise CorruptCheckpoint(path, f"{name} does not match its checksum")
        return load_file(str(path / name))
    except (OSError, SafetensorError) as e:
        raise CorruptCheckpoint(path, f"{name}: {str(e).splitlines()[0]}") from None


def _rng_key(rank: int) -> str:
    """The name of a rank's RNG state in rng.safetensors: rank 0's is the one a single-process run writes."""
    return "torch_rng" if rank == 0 else f"torch_rng.{rank}"


def _read_checkpoint(path: Path, with_optimizer: bool, rank: int = 0) -> tuple[dict, dict, dict | None, torch.Tensor | None]:
    """Everything a resume needs, read and checked before any of it touches the model: (state, model tensors,
    optimizer state dict, RNG state of `rank`; rank 0's in checkpoints written before ranks had their own)."""
    state = _read_state(path)
    weights = _read_tensors(path, "model.safetensors", state)
    if not with_optimizer:
        return state, weights, None, None
    try:
        opt = _unflatten_optimizer(_read_tensors(path, "optimizer.safetensors", state), state["optimizer"])
        rngs = _read_tensors(path, "rng.safetensors", state)
        rng = rngs.get(_rng_key(rank), rngs["torch_rng"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CorruptCheckpoint(path, f"optimizer or RNG state unreadable ({e!r})") from None
    return state, weights, opt, rng


def _restore(path: Path, parts: tuple, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    state, weights, opt, rng = parts
    load_state_dict_strict(model, weights, str(path))
    try:
        if optimizer is not None:
            optimizer.load_state_dict(opt)
            torch.set_rng_state(rng)
    except (KeyError, ValueError, RuntimeError) as e:
        raise MalsoriError(f"{path}: cannot load checkpoint ({str(e).splitlines()[0]})") from None
    return state


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, rank: int = 0) -> dict:
    """Restore model (and optimizer, the RNG state of `rank`) from a checkpoint folder; returns its state dict (step,
    epoch, ...)."""
    path = Path(path)
    return _restore(path, _read_checkpoint(path, optimizer is not None, rank), model, optimizer)


def resume_checkpoint(exp_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, say=print) -> tuple[Path | None, dict]:
    """Restore the newest checkpoint that reads back intact; (None, {}) when there is none. Newer corrupt ones are set
    aside as corrupt-ckpt-<step> (kept for a look, never resumed or averaged) and `say` gets one line about it."""
    bad: list[tuple[Path, CorruptCheckpoint]] = []
    for ckpt in reversed(list_checkpoints(exp_dir)):
        try:
            parts = _read_checkpoint(ckpt, True)
        except CorruptCheckpoint as e:
            bad.append((ckpt, e))
            continue
        state = _restore(ckpt, parts, model, optimizer)
        for p, _ in bad:
            aside = p.with_name(f"corrupt-{p.name}")
            shutil.rmtree(aside, ignore_errors=True)
            try:
                os.replace(p, aside)
            except OSError:
                pass  # another process (a DDP rank) set it aside first
        if bad:
            names = ", ".join(p.name for p, _ in bad)
            say(f"{names} {'is' if len(bad) == 1 else 'are'} corrupt ({bad[0][1].reason}); set aside as corrupt-*, resuming from {ckpt.name}")
        return ckpt, state
    if bad:
        raise MalsoriError(f"{exp_dir}: no checkpoint reads back intact (newest: {bad[0][1].reason}); "
                           "move the ckpt-* folders away to train from the start")
    return None, {}


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the models' floating-point parameters (integer buffers are taken from the last)."""
    if not paths:
        raise MalsoriError("no checkpoints to average")
    avg: dict[str, torch.Tensor] = {}
    for p in paths:
        sd = upgrade_keys(_read_tensors(Path(p), "model.safetensors", _read_state(Path(p))))
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k] = avg[k] + v.double() if k in avg else v.double()
            else:
                avg[k] = v
    return {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in avg.items()}
