"""In-context learning measured: a model completes k-shot prompts of a task's held-out items (greedy, with its
key/value cache), scored by the task's metric, for each k asked (0, 1, 2, 4, 8)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from malsori.lm.generate import SamplingOptions, generate
from malsori.llm.prompts import PromptFormat, build_prompt
from malsori.llm.scoring import score
from malsori.llm.taskfile import Item, PromptTask
from malsori.tokenizer import Tokenizer


@dataclass
class Completion:
    """One held-out item completed."""

    item: Item  # the query and its reference output
    hypothesis: str  # what the model wrote
    shots: int  # examples the prompt held (fewer than asked when the context was short)


@dataclass
class ShotResult:
    """A task's score with k examples in the prompt."""

    task: str  # task name
    metric: str  # exact | cer | bleu | chrf
    k: int  # examples asked for
    value: float  # the score
    items: int  # held-out items scored
    mean_shots: float  # examples the prompts held on average
    seconds: float  # wall time of the completions

    def line(self) -> str:
        return (f"{self.task}: k={self.k} {self.metric} {self.value:.4g} over {self.items} items "
                f"(mean {self.mean_shots:.2f} examples shown; {self.seconds:.1f} s)")


def complete(model: torch.nn.Module, tokenizer: Tokenizer, prompt_ids: list[int], max_tokens: int) -> str:
    """The greedy continuation of a prompt up to the end of its line, as text."""
    opts = SamplingOptions(temperature=0.0, max_tokens=max_tokens)
    return tokenizer.decode(generate(model, prompt_ids, tokenizer.special_ids.eos, opts))


def complete_items(model: torch.nn.Module, tokenizer: Tokenizer, task: PromptTask, items: list[Item], fmt: PromptFormat,
                   max_tokens: int = 64, seed: int = 0) -> list[Completion]:
    """Complete each item's prompt (k = fmt.shots examples, as many as fit the model's context)."""
    out = []
    for item in items:
        p = build_prompt(task, item, fmt, tokenizer, model.context - max_tokens, seed)
        out.append(Completion(item, complete(model, tokenizer, p.ids, max_tokens), len(p.examples)))
    return out


def evaluate_shots(model: torch.nn.Module, tokenizer: Tokenizer, task: PromptTask, ks: list[int], fmt: PromptFormat,
                   items: int = 0, max_tokens: int = 64, seed: int = 0) -> list[ShotResult]:
    """The task's test items (the first `items`, 0 = all) scored with k-shot prompts for each k in `ks`."""
    chosen = task.test[:items] if items else task.test
    results = []
    for k in ks:
        start = time.perf_counter()
        done = complete_items(model, tokenizer, task, chosen, replace(fmt, shots=k), max_tokens, seed)
        value = score(task.spec.metric, [c.item.output for c in done], [c.hypothesis for c in done])
        results.append(ShotResult(task.spec.name, task.spec.metric, k, value, len(done),
                                  sum(c.shots for c in done) / max(1, len(done)), time.perf_counter() - start))
    return results
