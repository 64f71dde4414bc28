"""What every task shares: the run settings the loop reads (`RunConfig`, `OptimConfig`) and the `Task` interface.

A task (speech recognition, language modelling, ...) owns its data, batching, loss, validation metric, throughput
unit and model folder; the loop in `malsori.train` owns everything else and knows no modality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import torch

from malsori.config import bounded
from malsori.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


@dataclass
class OptimConfig:
    """AdamW with linear warmup and inverse-square-root or cosine decay."""

    lr: float = bounded(2e-3, gt=0)  # peak learning rate, reached at the end of warmup
    betas: tuple[float, float] = bounded((0.9, 0.98), ge=0, lt=1)  # AdamW moment coefficients
    weight_decay: float = bounded(1e-3, ge=0)  # decoupled weight decay
    warmup_steps: int = bounded(300, ge=0)  # optimizer steps of linear warmup
    schedule: Literal["noam", "cosine", "constant"] = "noam"  # decay after warmup (cosine needs max_steps)
    min_lr: float = bounded(1e-5, ge=0)  # floor of the cosine schedule
    grad_clip: float = bounded(5.0, ge=0)  # max global gradient norm (0 = off)
    accum_grad: int = bounded(1, ge=1)  # batches per process averaged into each optimizer step (and over the processes)


@dataclass
class RunConfig:
    """The settings of a training run that every task shares; each task's config adds its data and model sections."""

    task: str = "asr"  # which task trains: asr (speech recognition) or lm (language model); picks the config class
    out: str = "exp/run"  # experiment folder: checkpoints, logs, tokenizer, and the final model in out/model
    seed: int = bounded(0, ge=0)  # seeds model init, batch order, augmentation, dropout
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    init_from: str = ""  # model folder whose tensors with matching names and shapes (e.g. the encoder) start a new run
    max_epochs: int = bounded(30, ge=1)  # passes over the training data
    max_steps: int = bounded(0, ge=0)  # stop after this many optimizer steps (0 = no limit)
    max_minutes: float = bounded(0.0, ge=0)  # wall-clock budget for this invocation (0 = none); stops after the current step
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for forward/loss (CPU or GPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = bounded(0, ge=0)  # torch CPU threads (0 = torch's default)
    checkpoint_every: int = bounded(200, ge=1)  # optimizer steps between checkpoints (one is also written after every epoch)
    keep_last: int = bounded(5, ge=0)  # checkpoints kept on disk (0 = all)
    average_last: int = bounded(3, ge=1)  # the final model averages this many newest checkpoints
    log_every: int = bounded(10, ge=1)  # optimizer steps between rows of log.csv (a row also at each checkpoint and the last step)
    valid_every: int = bounded(0, ge=0)  # optimizer steps between validations (0 = only after each epoch and where the run stops)
    progress: bool = True  # show a progress bar

    # Keys that may change between a run and its resumption (`out`: the folder may be moved or named another way).
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = (
        "out", "max_epochs", "max_steps", "max_minutes", "init_from", "progress", "threads", "checkpoint_every", "log_every", "valid_every",
        "device")


@dataclass
class Validation:
    """A validation pass: named metrics (lower is better), counts of what was scored, and a line for the console."""

    metrics: dict[str, float]  # e.g. {"wer": 0.31, "cer": 0.12} or {"ppl_token": 3.2, "ppl_word": 180.0}
    counts: dict[str, int]  # e.g. {"utterances": 200} or {"tokens": 50000, "words": 9000}
    line: str  # human-readable summary


class Task(ABC):
    """One kind of training: built once per run from its config, then asked by the loop for batches, losses,
    validation and the model folder. Everything random must be a function of (seed, epoch, position) or of the
    global torch RNG (which checkpoints restore), so a resumed run replays the same losses."""

    name: ClassVar[str]  # the recipe's `task:` value
    config_class: ClassVar[type[RunConfig]]  # the run's config dataclass (RunConfig + data and model sections)
    throughput_column: ClassVar[str]  # log.csv column of the throughput, e.g. audio_sec_per_sec, tokens_per_sec
    valid_columns: ClassVar[list[str]]  # valid.csv columns after epoch and step: metrics, then counts

    def __init__(self, cfg: Any, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        self.cfg, self.out, self.device, self.rank, self.world, self.verbose = cfg, out, device, rank, world, verbose

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """A freshly initialized model (the global RNG is seeded before)."""

    @abstractmethod
    def describe(self, model: torch.nn.Module) -> str:
        """One line naming the model family and vocabulary, for the run's start."""

    @abstractmethod
    def batches(self, epoch: int, skip: int) -> tuple[Iterable, int]:
        """This rank's batches of `epoch` after the first `skip`, and how many there are in the whole epoch."""

    @abstractmethod
    def prepare(self, batch: Any) -> Any | None:
        """A batch on the device, ready for `loss` (features, masking); None if nothing in it can be used."""

    def epoch_done(self, epoch: int) -> None:
        """Called after each epoch's batches (or where a run stops inside one): report what the epoch skipped."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, prepared: Any) -> tuple[torch.Tensor, dict]:
        """(mean loss, stats) of the model on a prepared batch; runs inside the DDP-wrapped forward."""

    @abstractmethod
    def amount(self, batch: Any) -> float:
        """How much data the batch holds in the throughput unit (audio seconds, tokens)."""

    def log_columns(self) -> list[str]:
        """Extra log.csv columns (e.g. one loss per data source)."""
        return []

    def observe(self, batch: Any, stats: dict) -> None:
        """See a batch's stats for the extra log columns."""

    def log_values(self) -> dict[str, str]:
        """The extra log columns since the last row (and start a new window)."""
        return {}

    @abstractmethod
    def validate(self, model: torch.nn.Module) -> Validation | None:
        """Score the model on held-out data (None when the recipe names none); must not touch the global RNG."""

    @abstractmethod
    def save_model(self, path: Path, model: torch.nn.Module) -> Path:
        """Write the model folder (config.json with format_version and task, weights, tokenizer, ...)."""


def prepare_tokenizer(kind: str, vocab_size: int, tokenizer_dir: str, texts: Iterable[str], out: Path) -> Tokenizer:
    """The run's tokenizer (out/tokenizer): loaded when the run made it already, copied from `tokenizer_dir`, or
    trained on `texts` (a `kind` tokenizer; `vocab_size` is ignored for characters)."""
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        return load_tokenizer(tok_dir)
    if tokenizer_dir:
        tokenizer = load_tokenizer(tokenizer_dir)
        tokenizer.save(tok_dir)
        return tokenizer
    return train_tokenizer(kind, texts, None if kind == "char" else vocab_size, tok_dir)
