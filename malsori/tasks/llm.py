"""Prompted LM fine-tuning as a task (`task: llm`): a pretrained GPT (`base`) learns prompted tasks
(`malsori.llm.taskfile` folders; several make a mixture, e.g. instruction tuning) through an adapter (full
fine-tuning, prompt tuning or LoRA); loss = cross-entropy of the output tokens only (the prompt is given);
validation = the tasks' own metrics as errors on their valid items, decoded greedily; throughput in tokens per second.
A LoRA or prompt-tuning run writes an adapter folder (the trained tensors only); full fine-tuning a whole LM folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.llm.adapters import AdaptedLM, AdapterConfig, load_base, save_adapted
from malsori.llm.icl import complete_items, output_limit
from malsori.llm.prompts import PromptFormat, build_prompt, target_ids
from malsori.llm.scoring import as_error, score
from malsori.llm.taskfile import PromptTask, load_task
from malsori.tasks.base import RunConfig, Task, Validation

IGNORE = -100  # target id of prompt and padding positions: no loss


@dataclass
class PromptDataConfig:
    """Which prompted tasks train, and how their prompts look."""

    tasks: list[str] = field(default_factory=list)  # task folders (task.json + train/valid/test.jsonl); several = a mixture
    instruction: bool = False  # begin each prompt with its task's instruction (instruction tuning)
    shots: int = bounded(0, ge=0)  # examples from the pool before each training input (never the item itself)
    separator: str = ":"  # between an input and its output
    max_items: int = bounded(0, ge=0)  # train on at most this many items of each task (0 = all)
    valid_items: int = bounded(50, ge=1)  # items of each task's valid.jsonl decoded at each validation
    max_output_tokens: int = bounded(0, ge=0)  # generation limit at validation (0 = the task's longest training output + 8)
    batch_size: int = bounded(16, ge=1)  # prompted items per batch


@dataclass
class LLMTrainConfig(RunConfig):
    """A prompted fine-tuning run (a YAML recipe with `task: llm`)."""

    task: Literal["llm"] = "llm"  # prompted LM fine-tuning
    base: str = ""  # the pretrained LM folder that is adapted (a `task: lm` run's out/model)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)  # tasks and prompt layout
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # full, prompt or lora, and their sizes


class PromptedLMTask(Task):
    """Batches of (prompt + output) sequences, right-padded; the loss reads only the output positions."""

    name = "llm"
    config_class = LLMTrainConfig
    throughput_column = "tokens_per_sec"
    valid_columns = ["error", "loss", "items"]

    def __init__(self, cfg: LLMTrainConfig, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        super().__init__(cfg, out, device, rank, world, verbose)
        d = cfg.data
        self.base = load_base(cfg.base)
        if not d.tasks:
            raise ConfigError("data.tasks: no task folders given")
        self.tokenizer = self.base.tokenizer
        self.tasks: list[PromptTask] = [load_task(t) for t in d.tasks]
        self.format = PromptFormat(d.separator, d.instruction, d.shots)
        budget = self.base.model.context - (cfg.adapter.prompt_length if cfg.adapter.kind == "prompt" else 0)
        self.sequences: list[tuple[np.ndarray, int]] = []  # (prompt + output ids, index of the first output token)
        too_long = 0
        for task in self.tasks:
            items = task.train[: d.max_items] if d.max_items else task.train
            for n, item in enumerate(items):
                target = target_ids(item, self.tokenizer)
                prompt = build_prompt(task, item, self.format, self.tokenizer, budget - len(target), cfg.seed + n)
                if len(prompt.ids) + len(target) > budget + 1:  # the last target token is predicted, never read
                    too_long += 1
                    continue
                self.sequences.append((np.asarray(prompt.ids + target, dtype=np.int64), len(prompt.ids)))
        if len(self.sequences) < d.batch_size:
            raise ConfigError(f"data.tasks: {len(self.sequences)} usable training items, fewer than one batch ({d.batch_size})")
        if verbose:
            tqdm.write(f"prompted tasks: {', '.join(t.spec.name for t in self.tasks)}; {len(self.sequences):,} training "
                       f"sequences ({too_long:,} longer than the context left out)")

    def build_model(self) -> torch.nn.Module:
        return AdaptedLM(self.base.model, self.cfg.adapter)

    def describe(self, model: torch.nn.Module) -> str:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return f"{self.cfg.adapter.kind} on {self.base.path}: {trainable:,} trainable parameters"

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of sequence indices, shuffled as a function of (seed, epoch)."""
        bs = self.cfg.data.batch_size
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.sequences))
        batches = [order[i : i + bs] for i in range(0, len(order) - bs + 1, bs)]
        n = len(batches) // self.world * self.world
        return batches[self.rank : n : self.world]

    def batches(self, epoch: int, skip: int) -> tuple[Iterator[list[tuple[np.ndarray, int]]], int]:
        all_batches = self._epoch_batches(epoch)
        return ([self.sequences[i] for i in b] for b in all_batches[skip:]), len(all_batches)

    def prepare(self, batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(t.to(self.device) for t in pad_sequences(batch))

    def loss(self, model: torch.nn.Module, prepared: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, y = prepared
        logits = model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE), {"tokens": int((y != IGNORE).sum())}

    def amount(self, batch: list[tuple[np.ndarray, int]]) -> float:
        return float(sum(len(ids) - 1 for ids, _ in batch))

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> Validation | None:
        d = self.cfg.data
        chosen = [(t, t.valid[: d.valid_items]) for t in self.tasks if t.valid]
        if not chosen:
            return None
        was_training = model.training
        model.eval()
        errors, nll, count, items, parts = [], 0.0, 0, 0, []
        for task, valid in chosen:
            limit = d.max_output_tokens or output_limit(task, self.tokenizer)
            done = complete_items(model, self.tokenizer, task, valid, self.format, limit, self.cfg.seed)
            value = score(task.spec.metric, [c.item.output for c in done], [c.hypothesis for c in done])
            errors.append(as_error(task.spec.metric, value))
            parts.append(f"{task.spec.name} {task.spec.metric} {value:.4g}")
            for c in done:
                target = target_ids(c.item, self.tokenizer)
                prompt = build_prompt(task, c.item, self.format, self.tokenizer, model.context - len(target), self.cfg.seed)
                x, y = pad_sequences([(np.asarray(prompt.ids + target, dtype=np.int64), len(prompt.ids))])
                y = y.to(self.device)
                nll += float(F.cross_entropy(model(x.to(self.device)).flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE, reduction="sum"))
                count += int((y != IGNORE).sum())
            items += len(done)
        model.train(was_training)
        error, loss = sum(errors) / len(errors), nll / max(1, count)
        return Validation({"error": error, "loss": loss}, {"items": items},
                          f"{'; '.join(parts)}; mean error {error:.4f}, output loss {loss:.4f} nats/token ({items} items)")

    def save_model(self, path: Path, model: torch.nn.Module) -> Path:
        return save_adapted(path, model, self.base)


def pad_sequences(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, first output index) pairs → inputs [B, T] (0-padded) and targets [B, T], IGNORE outside the outputs."""
    t = max(len(ids) for ids, _ in batch) - 1
    x = torch.zeros(len(batch), t, dtype=torch.long)
    y = torch.full((len(batch), t), IGNORE, dtype=torch.long)
    for r, (ids, start) in enumerate(batch):
        ids = torch.from_numpy(ids)
        x[r, : len(ids) - 1] = ids[:-1]
        y[r, start - 1 : len(ids) - 1] = ids[start:]
    return x, y

