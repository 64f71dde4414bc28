"""Few-shot prompts: an optional instruction line, k examples `input : output`, then the query `input :`, each line
ended by the end-of-sentence id as in the LM's training stream; the model writes the output and stops at eos.

The examples come from the task's pool (its train split) and never equal the query (same input, or same group and
input); they are drawn by a seeded generator that depends on the query, so every k sees the same kind of prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from malsori.config import bounded, check_ranges
from malsori.llm.taskfile import Item, PromptTask
from malsori.tokenizer import Tokenizer


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt is laid out."""

    separator: str = ":"  # between an example's input and its output
    instruction: bool = False  # begin with the task's (or the item's) instruction line
    shots: int = bounded(0, ge=0)  # examples before the query

    def __post_init__(self) -> None:
        check_ranges(self)


def choose_examples(pool: list[Item], query: Item, k: int, seed: int = 0) -> list[Item]:
    """k examples for `query` from `pool`: of the query's group when it has one, never the query itself (nor an
    item with its input or output), drawn by a generator seeded with (seed, query)."""
    if k == 0:
        return []
    candidates = [it for it in pool if it.group == query.group and it.input != query.input and it.output != query.output]
    rng = random.Random(f"{seed}\t{query.group}\t{query.input}")
    return rng.sample(candidates, min(k, len(candidates)))


def prompt_lines(task: PromptTask, query: Item, examples: list[Item], fmt: PromptFormat) -> list[str]:
    """The prompt as text lines; the last one is the query, waiting for its output."""
    sep = fmt.separator
    head = [task.instruction(query)] if fmt.instruction and task.instruction(query) else []
    return head + [f"{ex.input} {sep} {ex.output}" for ex in examples] + [f"{query.input} {sep}"]


def encode_prompt(lines: list[str], tokenizer: Tokenizer) -> list[int]:
    """Lines → ids: eos, line, eos, line, ..., last line (no eos after it: the model continues it)."""
    eos = tokenizer.special_ids.eos
    ids = [eos]
    for n, line in enumerate(lines):
        ids += tokenizer.encode(line) + ([eos] if n < len(lines) - 1 else [])
    return ids


@dataclass
class Prompt:
    """A prompt ready for a model, and what it holds."""

    ids: list[int]  # token ids, starting with eos
    examples: list[Item]  # the examples it shows (fewer than asked when the context is short)
    text: str  # the lines joined by newlines, for reading


def build_prompt(task: PromptTask, query: Item, fmt: PromptFormat, tokenizer: Tokenizer, budget: int, seed: int = 0) -> Prompt:
    """The k-shot prompt of `query`, dropping its first examples until it fits `budget` tokens."""
    examples = choose_examples(task.train, query, fmt.shots, seed)
    while True:
        lines = prompt_lines(task, query, examples, fmt)
        ids = encode_prompt(lines, tokenizer)
        if len(ids) <= budget or not examples:
            return Prompt(ids, examples, "\n".join(lines))
        examples = examples[1:]


def target_ids(item: Item, tokenizer: Tokenizer) -> list[int]:
    """What the model should write after the prompt: the output and the end of the line."""
    return tokenizer.encode(item.output) + [tokenizer.special_ids.eos]
