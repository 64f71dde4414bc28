"""The training loop, the same for every task: read it top to bottom. Recipe → task (data, tokenizer, model) →
AdamW steps → checkpoints → model folder.

The task (`malsori.tasks`: speech recognition, language model) owns batching, loss, validation, throughput unit and
the model folder; this loop owns the optimizer and schedule, clipping, accumulation, mixed precision, DDP,
checkpoints, logs and progress, and knows no modality.

Exact resume: batch order and augmentation are functions of (seed, epoch, index); checkpoints hold the model, the
optimizer, the RNG state and the position inside the epoch, so a run killed at any point and resumed logs the same
losses as an uninterrupted one. Multi-process training (torchrun) shards batches by rank and wraps the model in DDP;
rank 0 alone writes the run folder (`malsori.distributed`, docs/distributed.md).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from malsori.checkpoint import average_checkpoints, list_checkpoints, load_checkpoint, resume_checkpoint, save_checkpoint
from malsori.config import from_dict, to_dict
from malsori.data.manifest import atomic_write_json
from malsori.distributed import check_shared_lock, check_world_size, lock_line, rank_seed
from malsori.distributed import start as start_processes
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
        if prepared is None:  # a DDP rank with no usable batch: zero gradients, so the ranks' all-reduces stay in step
            return sum(p.sum() for p in self.model.parameters()) * 0.0, {}
        return self.task.loss(self.model, prepared)


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


@with_run_lock  # [rundir] one trainer per folder (rank 0 holds the lock); removes a killed run's temporaries
def train(cfg: RunConfig) -> Path:
    """Run (or resume) training of the task `cfg.task`; returns the final model directory. Under torchrun, every
    process runs this; rank 0 alone writes the run folder and prints."""
    procs, device = start_processes(cfg.device)
    main_proc = procs.main
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)

    def build(resume_from: str | None) -> tuple:
        """Task, model, optimizer and the checkpoint resumed (rank 0: the newest intact one; the others: the one rank 0
        chose, read, never set aside)."""
        torch.manual_seed(cfg.seed)
        task = task_class(cfg.task)(cfg, out, device, procs.rank, procs.world, main_proc)
        model = task.build_model().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
        if procs.world > 1:
            torch.manual_seed(rank_seed(cfg.seed, procs.rank))  # the same initial model, each rank its own dropout
        if main_proc:
            ckpt, state = resume_checkpoint(out, model, optimizer, tqdm.write)  # [rundir]
        elif resume_from:
            ckpt = out / resume_from
            state = load_checkpoint(ckpt, model, optimizer, procs.rank)
        else:
            ckpt, state = None, {}
        if ckpt is not None and main_proc:
            tqdm.write(f"resuming from {ckpt.name}: step {state['step']}, epoch {state['epoch']}, batch {state['pos']}")
        elif ckpt is None and cfg.init_from:
            loaded = warm_start(model, Path(cfg.init_from))
            if main_proc:
                tqdm.write(f"initialized {loaded} tensors from {cfg.init_from}")
        return task, model, optimizer, ckpt, state

    def start_main() -> tuple:
        out.mkdir(parents=True, exist_ok=True)
        check_world_size(out, procs.world)
        _check_resumable(out, cfg)
        atomic_write_json(out / "train_config.json", to_dict(cfg), indent=1)
        return build(None)

    def start_other(lock: str, resume_from: str | None) -> tuple:
        check_shared_lock(out, lock)
        return build(resume_from)

    built = procs.on_main(start_main)  # rank 0 first: it writes the config, tokenizer and CMVN the others read
    if procs.world > 1:  # then the others, once they see the lock rank 0 holds (so out= is one shared folder)
        lock, resume_from = procs.from_main((lock_line(out), built[3] and built[3].name) if main_proc else None)
        built = procs.together(lambda: built if main_proc else start_other(lock, resume_from))
    task, model, optimizer, _, state = built
    step, epoch, pos, elapsed = state.get("step", 0), state.get("epoch", 0), state.get("pos", 0), state.get("elapsed", 0.0)
    net = _LossModule(model, task)
    if procs.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if main_proc:
        n_params = sum(p.numel() for p in model.parameters())
        processes = f", {procs.world} processes" if procs.world > 1 else ""
        tqdm.write(f"model: {task.describe(model)}, {n_params / 1e6:.2f} M parameters, device {device}{processes}")

    speed_col = task.throughput_column
    # [rundir] rows keyed by step: those after the resumed checkpoint are dropped, to be written again
    log = StepLog(out / "log.csv", ["step", "epoch", "loss", "lr", speed_col, "elapsed"] + task.log_columns(), step, main_proc)
    vlog = StepLog(out / "valid.csv", ["epoch", "step"] + task.valid_columns, step, main_proc)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    t0 = time.time()
    run_t0 = t0 - elapsed  # [rundir] `elapsed` continues from the checkpoint's
    stop, validated = bool(cfg.max_steps) and step >= cfg.max_steps, -1  # stop: a finished run resumed (killed saving the model)

    def validate() -> None:  # rank 0; the others wait
        result = task.validate(model)
        if result is not None:
            vlog.write({"epoch": epoch, "step": step, **{k: f"{v:.4f}" for k, v in result.metrics.items()}, **result.counts})
            tqdm.write(f"epoch {epoch}, step {step}: valid {result.line}")

    def checkpoint() -> None:  # every rank's RNG state, saved by rank 0
        rngs = procs.gather(torch.get_rng_state())
        where = {"epoch": epoch, "pos": pos, "elapsed": time.time() - run_t0, "world_size": procs.world}
        procs.on_main(lambda: save_checkpoint(out, step, model, optimizer, where, cfg.keep_last, rngs))

    accum = cfg.optim.accum_grad
    while epoch < cfg.max_epochs and not stop:
        batches, total = task.batches(epoch, pos)
        bar = tqdm(batches, total=total, initial=pos, desc=f"epoch {epoch + 1}/{cfg.max_epochs}",
                   disable=not (cfg.progress and main_proc), dynamic_ncols=True)
        model.train()
        window_amount, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
        for batch in bar:
            if pos % accum == 0 and total - pos < accum:  # too few left for a step: not carried into the next epoch
                break
            pos += 1
            prepared = task.prepare(batch)
            if prepared is None and procs.world == 1:
                continue
            # DDP: gradients are averaged over the ranks at the last batch of each accumulation only
            with net.no_sync() if procs.world > 1 and pos % accum else nullcontext():
                with autocast:
                    loss, stats = net(prepared)  # a rank with nothing usable still joins the all-reduce, with zeros
                (loss / accum).backward()
            if prepared is not None:
                task.observe(batch, stats)
                window_amount += task.amount(batch)
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
                loss_sum, n, amount = procs.sum([window_loss, window_n, window_amount])  # every rank's batches
                speed = amount / max(1e-9, time.time() - window_t)
                row = {"step": step, "epoch": epoch, "loss": f"{loss_sum / max(1, n):.6f}", "lr": f"{lr:.3e}",
                       speed_col: f"{speed:.1f}", "elapsed": f"{time.time() - run_t0:.1f}", **task.log_values()}
                log.write(row)
                bar.set_postfix(loss=f"{loss_sum / max(1, n):.3f}", lr=f"{lr:.1e}", speed=f"{speed:.0f}/s")
                window_amount, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
            # [rundir] validate before the checkpoint: a kill during validation resumes before it and validates again
            if cfg.valid_every and step % cfg.valid_every == 0:
                procs.on_main(validate)
                validated = step
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            out_of_time = bool(cfg.max_minutes) and procs.any(time.time() - t0 > 60 * cfg.max_minutes)  # rank clocks differ
            if (cfg.max_steps and step >= cfg.max_steps) or out_of_time:
                stop = True
                break
        bar.close()
        procs.together(lambda: task.epoch_done(epoch))
        if not stop:
            epoch, pos = epoch + 1, 0
        if validated != step:  # after every epoch, and where the run stops ([rundir] before the checkpoint, as above)
            procs.on_main(validate)
            validated = step
        checkpoint()
    model_dir = out / "model"

    def write_model() -> None:
        ckpts = list_checkpoints(out)[-cfg.average_last:]
        model.load_state_dict(average_checkpoints(ckpts))
        task.save_model(model_dir, model)
        tqdm.write(f"averaged {len(ckpts)} checkpoint(s) into {model_dir}")

    procs.on_main(write_model)  # the others wait, so that every process returns once the model folder is written
    procs.end()
    return model_dir
