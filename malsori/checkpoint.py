"""Training checkpoints as folders of safetensors + JSON (never pickles), written atomically, and checkpoint averaging.

A checkpoint `ckpt-<step>/` holds model.safetensors, optimizer.safetensors, state.json (step, epoch, position,
optimizer hyper-parameters, RNG state). It is written under a temporary name and renamed into place, and the
`latest` pointer is replaced atomically after it, so a kill at any moment leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from malsori.data.manifest import atomic_write_text
from malsori.errors import MalsoriError
from malsori.nn.load import load_state_dict_strict


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


def save_checkpoint(exp_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, keep_last: int = 5) -> Path:
    """Write ckpt-<step>/ atomically, point `latest` at it, and prune all but the newest `keep_last`."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    final = exp_dir / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=exp_dir, prefix=f".ckpt-{step:08d}."))
    try:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng = torch.get_rng_state()
        save_file({"torch_rng": rng}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta}, indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(exp_dir / "latest", final.name + "\n")
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


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore model (and optimizer, RNG) from a checkpoint folder; returns its state dict (step, epoch, ...)."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        load_state_dict_strict(model, load_file(str(path / "model.safetensors")), str(path))
        if optimizer is not None:
            optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
            torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch_rng"])
    except (OSError, json.JSONDecodeError, KeyError, RuntimeError) as e:
        raise MalsoriError(f"{path}: cannot load checkpoint ({str(e).splitlines()[0]})") from None
    return state


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the models' floating-point parameters (integer buffers are taken from the last)."""
    if not paths:
        raise MalsoriError("no checkpoints to average")
    avg: dict[str, torch.Tensor] = {}
    for p in paths:
        sd = load_file(str(Path(p) / "model.safetensors"))
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k] = avg[k] + v.double() if k in avg else v.double()
            else:
                avg[k] = v
    return {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in avg.items()}
