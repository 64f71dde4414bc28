"""`malsori llm`: prompted tasks on a language model folder or an adapter folder — few-shot evaluation (in-context
learning for k = 0, 1, 2, 4, 8) and the prompt a task item gets. Training goes through `malsori train` (`task: llm`)."""

from __future__ import annotations

from pathlib import Path

import click

from malsori.errors import MalsoriError
from malsori.files import strict_json

_DIR = click.Path(file_okay=False, path_type=Path)


def _shots(value: str) -> list[int]:
    try:
        ks = [int(k) for k in value.split(",") if k.strip()]
    except ValueError:
        raise MalsoriError(f"--shots: {value!r} is not a comma-separated list of integers") from None
    if not ks or min(ks) < 0:
        raise MalsoriError(f"--shots: {value!r} must list integers >= 0")
    return ks


@click.group(name="llm")
def llm() -> None:
    """Prompted tasks on language models: in-context learning measured, prompts shown."""


@llm.command("eval-icl")
@click.argument("model")
@click.argument("tasks", nargs=-1, required=True, type=_DIR)
@click.option("--shots", default="0,1,2,4,8", show_default=True, help="Numbers of examples in the prompt, comma-separated.")
@click.option("--items", type=click.IntRange(min=0), default=100, show_default=True, help="Test items scored per task (0 = all).")
@click.option("--instruction", is_flag=True, help="Begin each prompt with the task's instruction line.")
@click.option("--separator", default=":", show_default=True, help="Between an input and its output.")
@click.option("--max-tokens", type=click.IntRange(min=0), default=0, show_default=True,
              help="Longest output generated (0 = the task's longest training output + 8 tokens).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seeds the choice of examples.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per (task, k) instead.")
def eval_icl(model: str, tasks: tuple[Path, ...], shots: str, items: int, instruction: bool, separator: str,
             max_tokens: int, seed: int, as_json: bool) -> None:
    """Score a language model (or adapter) folder on task folders' test items with k-shot prompts (greedy
    completion; the task's metric: exact match, CER, BLEU or chrF)."""
    from malsori.llm.adapters import load_lm
    from malsori.llm.icl import evaluate_shots
    from malsori.llm.prompts import PromptFormat
    from malsori.llm.taskfile import load_task

    ks = _shots(shots)
    loaded = [load_task(t) for t in tasks]
    m = load_lm(model)
    for task in loaded:
        if not task.test:
            raise MalsoriError(f"{task.path}: no test.jsonl items")
        for r in evaluate_shots(m.model, m.tokenizer, task, ks, PromptFormat(separator, instruction), items, max_tokens, seed):
            click.echo(strict_json({**r.__dict__, "model": str(m.path)}, str(task.path)) if as_json else r.line())


@llm.command("prompt")
@click.argument("task", type=_DIR)
@click.option("--item", type=click.IntRange(min=0), default=0, show_default=True, help="Index of the test item.")
@click.option("--shots", type=click.IntRange(min=0), default=4, show_default=True, help="Examples before the query.")
@click.option("--instruction", is_flag=True, help="Begin with the task's instruction line.")
@click.option("--separator", default=":", show_default=True, help="Between an input and its output.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seeds the choice of examples.")
def prompt_cmd(task: Path, item: int, shots: int, instruction: bool, separator: str, seed: int) -> None:
    """Print the k-shot prompt of a task's test item, one line per prompt line (for `malsori lm generate --prompt-file`)."""
    from malsori.llm.prompts import PromptFormat, choose_examples, prompt_lines
    from malsori.llm.taskfile import load_task

    t = load_task(task)
    if item >= len(t.test):
        raise MalsoriError(f"{task}: --item {item}, but test.jsonl has {len(t.test)} items")
    query = t.test[item]
    for line in prompt_lines(t, query, choose_examples(t.train, query, shots, seed), PromptFormat(separator, instruction, shots)):
        click.echo(line)
