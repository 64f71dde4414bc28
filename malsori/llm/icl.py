"""In-context learning measured: a model completes k-shot prompts of a task's held-out items (greedy, with its
key/value cache), scored by the task's metric, for each k asked (0, 1, 2, 4, 8)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from malsori.lm.generate import SamplingOptions, generate
from malsori.llm.prompts import PromptFormat, build_prompt, target_ids
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


def output_limit(task: PromptTask, tokenizer: Tokenizer, margin: int = 8) -> int:
    """A generation limit for a task: its longest training output in tokens plus a margin (test outputs unread)."""
    return max((len(tokenizer.encode(it.output)) for it in task.train), default=56) + margin


def evaluate_shots(model: torch.nn.Module, tokenizer: Tokenizer, task: PromptTask, ks: list[int], fmt: PromptFormat,
                   items: int = 0, max_tokens: int = 0, seed: int = 0) -> list[ShotResult]:
    """The task's test items (the first `items`, 0 = all) scored with k-shot prompts for each k in `ks`; outputs
    stop at `max_tokens` (0 = `output_limit(task)`)."""
    chosen = task.test[:items] if items else task.test
    max_tokens = max_tokens or output_limit(task, tokenizer)
    results = []
    for k in ks:
        start = time.perf_counter()
        done = complete_items(model, tokenizer, task, chosen, replace(fmt, shots=k), max_tokens, seed)
        value = score(task.spec.metric, [c.item.output for c in done], [c.hypothesis for c in done])
        results.append(ShotResult(task.spec.name, task.spec.metric, k, value, len(done),
                                  sum(c.shots for c in done) / max(1, len(done)), time.perf_counter() - start))
    return results


@torch.no_grad()
def loss_by_position(model: torch.nn.Module, tokens: torch.Tensor, windows: int, batch_size: int = 8) -> torch.Tensor:
    """Mean next-token loss (nats) at each position 0..C-1 of `windows` consecutive, non-overlapping windows of the
    model's context C cut from a token stream [N] (Olsson et al.'s in-context-learning score is the loss at a late
    position minus the loss at an early one: negative when later tokens profit from the context)."""
    c = model.context
    windows = min(windows, (len(tokens) - 1) // c)
    if windows < 1:
        raise ValueError(f"{len(tokens)} tokens are fewer than one window of {c} + 1")
    total = torch.zeros(c, dtype=torch.float64)
    model.eval()
    for b in range(0, windows, batch_size):
        starts = range(b * c, min(windows, b + batch_size) * c, c)
        x = torch.stack([tokens[s : s + c] for s in starts])
        y = torch.stack([tokens[s + 1 : s + c + 1] for s in starts])
        logits = model(x).float()
        total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none").double().sum(0)
    return total / windows


@torch.no_grad()
def reference_loss(model: torch.nn.Module, tokenizer: Tokenizer, task: PromptTask, ks: list[int], fmt: PromptFormat,
                   items: int = 0, seed: int = 0) -> list[tuple[int, float]]:
    """(k, mean loss in nats per token of the reference outputs and their end) of the test items under k-shot
    prompts: a graded view of in-context learning that moves before exact answers appear."""
    chosen = task.test[:items] if items else task.test
    model.eval()
    out = []
    for k in ks:
        nll, count = 0.0, 0
        for item in chosen:
            target = target_ids(item, tokenizer)
            p = build_prompt(task, item, replace(fmt, shots=k), tokenizer, model.context - len(target), seed)
            ids = torch.tensor([p.ids + target])
            logits = model(ids[:, :-1])[0, len(p.ids) - 1 :].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, len(p.ids) :], reduction="sum"))
            count += len(target)
        out.append((k, nll / max(1, count)))
    return out
