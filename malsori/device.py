"""Torch device names checked before any work: one check for the CLI's --device, a training config's `device` and
`malsori.load(..., device)`, so a device this machine lacks is one clear line, never a CUDA traceback."""

from __future__ import annotations

from malsori.errors import ConfigError


def device_problem(name: str) -> str | None:
    """None when `name` (auto, cpu, cuda, cuda:N, ...) is a device torch can use here, else why not."""
    import torch  # here, so that the CLI starts without loading torch

    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        return f"unknown device {name!r} (auto, cpu, cuda or cuda:N)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"{name}: {build} (use cpu or auto)"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"{name}: only {torch.cuda.device_count()} CUDA device(s)"
    return None


def check_device(name: str, where: str = "device") -> None:
    """Raise a ConfigError naming `where` unless this machine has device `name`."""
    problem = device_problem(name)
    if problem:
        raise ConfigError(f"{where}: {problem}")
