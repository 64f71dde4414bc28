"""The training loop, the same for every task: read it top to bottom. Recipe → task (data, tokenizer, model) →
AdamW steps → checkpoints → model folder.

The task (`malsori.tasks`: speech recognition, language model) owns batching, loss, validation, throughput unit and
the model folder; this loop owns the optimizer and schedule, clipping, accumulation, mixed precision, DDP,
checkpoints, logs and progress, and knows no modality.

Exact resume: batch order and augmentation are functions of (seed, epoch, index); checkpoints hold the model, the
optimizer, the RNG state and the position inside the epoch, so a run killed at any point and resumed logs the same
losses as an uninterrupted one. Multi-process training (torchrun) shards batches by rank and wraps the model in DDP.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from malsori.checkpoint import average_checkpoints, list_checkpoints, resume_checkpoint, save_checkpoint
from malsori.config import from_dict, to_dict
from malsori.data.manifest import atomic_write_json
from malsori.device import check_device
from malsori.errors import ConfigError
from malsori.rundir import StepLog, config_differences, with_run_lock
from malsori.tasks import task_class
from malsori.tasks.asr import DataConfig, SourceConfig, TrainConfig, read_sources  # noqa: F401  (the speech run's config)
from malsori.tasks.base import OptimConfig, RunConfig, Task


def warm_start(model: torch.nn.Module, folder: Path) -> int:
    """Copy the tensors of a saved model folder whose names and shapes match into `model`; returns how many."""
    from safetensors.torch import load_file

    from malsori.nn.load import upgrade_keys

    path = folder / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"init_from: {folder} is not a malsori model folder (no model.safetensors)")
    own = model.state_dict()
    saved = {k: v for k, v in upgrade_keys(load_file(str(path))).items() if k in own and own[k].shape == v.shape}
    if not saved:
        raise ConfigError(f"init_from: no tensor of {folder} matches this model's names and shapes")
    model.load_state_dict(saved, strict=False)
    return len(saved)


def lr_at(step: int, o: OptimConfig, max_steps: int) -> float:
    """Learning rate for optimizer step `step` (1-based)."""
    warm = max(1, o.warmup_steps)
    if step <= warm:
        return o.lr * step / warm
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "cosine":
        if max_steps <= warm:
            raise ConfigError("optim.schedule=cosine needs max_steps > optim.warmup_steps")
        t = min(1.0, (step - warm) / (max_steps - warm))
        return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * t))
    return o.lr * math.sqrt(warm / step)


class _LossModule(torch.nn.Module):
    """Makes the task's loss the forward, so DistributedDataParallel sees the computation it must synchronize."""

    def __init__(self, model: torch.nn.Module, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, prepared):
        return self.task.loss(self.model, prepared)


def _setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(name: str, rank: int) -> torch.device:
    check_device(name)
    if name == "auto":
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _check_resumable(out: Path, cfg: RunConfig) -> None:
    saved = out / "train_config.json"
    now = to_dict(cfg)
    if saved.exists():
        try:
            raw = json.loads(saved.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{saved}: unreadable ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict) or raw.get("task", "asr") != cfg.task:
            raise ConfigError(f"{out} holds a run of another task ({raw.get('task', 'asr') if isinstance(raw, dict) else '?'}, "
                              f"not {cfg.task}): resume it with its own recipe, or use another out=")
        # read through the dataclasses, so fields added to malsori since the run started take their defaults
        old = to_dict(from_dict(type(cfg), raw, "train_config.json"))
        diff = config_differences(old, now, cfg.RESUMABLE_CHANGES)  # [rundir] what paths name, not how
        if diff:
            more = f"; and {len(diff) - 4} more" if len(diff) > 4 else ""
            raise ConfigError(f"{out} holds a run with a different config ({'; '.join(diff[:4])}{more}): "
                              "resume it with its own settings, or use another out=")


@with_run_lock  # [rundir] one trainer per folder; removes a killed run's temporaries
def train(cfg: RunConfig) -> Path:
    """Run (or resume) training of the task `cfg.task`; returns the final model directory."""
    rank, world = _setup_distributed()
    main_proc = rank == 0
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, cfg)
    if main_proc:
        atomic_write_json(out / "train_config.json", to_dict(cfg), indent=1)
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device, rank)

    task = task_class(cfg.task)(cfg, out, device, rank, world, main_proc)
    model = task.build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    step, epoch, pos, elapsed = 0, 0, 0, 0.0
    ckpt, state = resume_checkpoint(out, model, optimizer, tqdm.write if main_proc else (lambda line: None))  # [rundir]
    if ckpt is not None:
        step, epoch, pos, elapsed = state["step"], state["epoch"], state["pos"], state.get("elapsed", 0.0)
        if main_proc:
            tqdm.write(f"resuming from {ckpt.name}: step {step}, epoch {epoch}, batch {pos}")
    elif cfg.init_from:
        loaded = warm_start(model, Path(cfg.init_from))
        if main_proc:
            tqdm.write(f"initialized {loaded} tensors from {cfg.init_from}")
    net = _LossModule(model, task)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if main_proc:
        n_params = sum(p.numel() for p in model.parameters())
        tqdm.write(f"model: {task.describe(model)}, {n_params / 1e6:.2f} M parameters, device {device}")

    speed_col = task.throughput_column
    # [rundir] rows keyed by step: those after the resumed checkpoint are dropped, to be written again
    log = StepLog(out / "log.csv", ["step", "epoch", "loss", "lr", speed_col, "elapsed"] + task.log_columns(), step, main_proc)
    vlog = StepLog(out / "valid.csv", ["epoch", "step"] + task.valid_columns, step, main_proc)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    t0 = time.time()
    run_t0 = t0 - elapsed  # [rundir] `elapsed` continues from the checkpoint's
    stop, validated = bool(cfg.max_steps) and step >= cfg.max_steps, -1  # stop: a finished run resumed (killed saving the model)

    def validate() -> None:
        nonlocal validated
        result, validated = task.validate(model), step
        if result is not None:
            vlog.write({"epoch": epoch, "step": step, **{k: f"{v:.4f}" for k, v in result.metrics.items()}, **result.counts})
            tqdm.write(f"epoch {epoch}, step {step}: valid {result.line}")

    accum = cfg.optim.accum_grad
    while epoch < cfg.max_epochs and not stop:
        batches, total = task.batches(epoch, pos)
        bar = tqdm(batches, total=total, initial=pos, desc=f"epoch {epoch + 1}/{cfg.max_epochs}",
                   disable=not (cfg.progress and main_proc), dynamic_ncols=True)
        model.train()
        window_amount, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
        for batch in bar:
            pos += 1
            prepared = task.prepare(batch)
            if prepared is None:
                continue
            with autocast:
                loss, stats = net(prepared)
            (loss / accum).backward()
            task.observe(batch, stats)
            window_amount += task.amount(batch) * world
            window_loss += float(loss.detach())
            window_n += 1
            if pos % accum:
                continue
            step += 1
            lr = lr_at(step, cfg.optim, cfg.max_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # [rundir] a row at each checkpoint too, so a resumed run's first window of batches is an uninterrupted run's
            if step % cfg.log_every == 0 or step in (1, cfg.max_steps) or step % cfg.checkpoint_every == 0:
                speed = window_amount / max(1e-9, time.time() - window_t)
                row = {"step": step, "epoch": epoch, "loss": f"{window_loss / window_n:.6f}", "lr": f"{lr:.3e}",
                       speed_col: f"{speed:.1f}", "elapsed": f"{time.time() - run_t0:.1f}", **task.log_values()}
                log.write(row)
                bar.set_postfix(loss=f"{window_loss / window_n:.3f}", lr=f"{lr:.1e}", speed=f"{speed:.0f}/s")
                window_amount, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
            # [rundir] validate before the checkpoint: a kill during validation resumes before it and validates again
            if main_proc and cfg.valid_every and step % cfg.valid_every == 0:
                validate()
            if main_proc and step % cfg.checkpoint_every == 0:
                save_checkpoint(out, step, model, optimizer, {"epoch": epoch, "pos": pos, "elapsed": time.time() - run_t0}, cfg.keep_last)
            if (cfg.max_steps and step >= cfg.max_steps) or (cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes):
                stop = True
                break
        bar.close()
        task.epoch_done(epoch)
        if not stop:
            epoch, pos = epoch + 1, 0
        if main_proc:
            if validated != step:  # after every epoch, and where the run stops ([rundir] before the checkpoint, as above)
                validate()
            save_checkpoint(out, step, model, optimizer, {"epoch": epoch, "pos": pos, "elapsed": time.time() - run_t0}, cfg.keep_last)
    if world > 1:
        dist.barrier()
    model_dir = out / "model"
    if main_proc:
        ckpts = list_checkpoints(out)[-cfg.average_last:]
        model.load_state_dict(average_checkpoints(ckpts))
        task.save_model(model_dir, model)
        tqdm.write(f"averaged {len(ckpts)} checkpoint(s) into {model_dir}")
    return model_dir
