"""A prompted task on disk: a folder with `task.json` (name, metric, optional instruction) and JSON Lines files of
items (`train.jsonl`: the pool few-shot examples and fine-tuning draw from; `test.jsonl`; optional `valid.jsonl`).

Each item is one JSON object: `input`, `output`, optional `instruction` (overrides the task's) and optional `group`
(an episode id: a synthetic mapping that exists only inside one prompt draws its examples from its own group).
Loading refuses a test or validation item whose (group, input) is also a training item, so nothing scored was seen.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal

from malsori.data.manifest import atomic_write_json, atomic_write_text
from malsori.errors import MalsoriError
from malsori.files import strict_json

Metric = Literal["exact", "cer", "bleu", "chrf"]
METRICS: tuple[str, ...] = ("exact", "cer", "bleu", "chrf")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class TaskFileError(MalsoriError):
    """A task folder is missing a file, or a line of it is malformed."""


@dataclass(frozen=True)
class Item:
    """One input → output pair of a task."""

    input: str  # what the model reads
    output: str  # what it should write
    instruction: str = ""  # overrides the task's instruction when not empty
    group: str = ""  # episode id: examples for this item come only from items of the same group ("" = any)

    @property
    def key(self) -> tuple[str, str]:
        """What makes two items the same for the disjointness rule."""
        return self.group, self.input


@dataclass
class TaskSpec:
    """A task's description (task.json)."""

    name: str  # short name, e.g. eng_fra
    metric: Metric = "exact"  # how outputs are scored: exact match, character error rate, BLEU or chrF (sacrebleu)
    instruction: str = ""  # one line telling the model what to do (instruction tuning and zero-shot prompts)


@dataclass
class PromptTask:
    """A loaded task folder."""

    spec: TaskSpec  # name, metric, instruction
    train: list[Item]  # pool of examples and fine-tuning items
    valid: list[Item]  # held-out items for validation during training (may be empty)
    test: list[Item]  # held-out items for evaluation
    path: Path  # the folder

    def instruction(self, item: Item) -> str:
        """The instruction an item is prompted with."""
        return item.instruction or self.spec.instruction


def _read_items(path: Path) -> list[Item]:
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFileError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFileError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("input", "output")):
            raise TaskFileError(f"{path}:{n}: an item needs string fields input and output")
        extra = set(obj) - {"input", "output", "instruction", "group"}
        if extra or not all(isinstance(obj.get(k, ""), str) for k in ("instruction", "group")):
            raise TaskFileError(f"{path}:{n}: unknown or non-string fields {sorted(extra) or ['instruction/group']}")
        items.append(Item(**obj))
    return items


def load_task(folder: str | Path) -> PromptTask:
    """Read a task folder; a held-out item that is also a training item is an error naming the file and input."""
    folder = Path(folder)
    spec_path = folder / "task.json"
    if not spec_path.is_file():
        raise TaskFileError(f"{folder}: not a task folder (no task.json)")
    try:
        raw = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskFileError(f"{spec_path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise TaskFileError(f"{spec_path}: needs a JSON object with a string name")
    unknown = set(raw) - {"name", "metric", "instruction"}
    if unknown:
        raise TaskFileError(f"{spec_path}: unknown keys {sorted(unknown)}")
    if raw.get("metric", "exact") not in METRICS:
        raise TaskFileError(f"{spec_path}: metric {raw.get('metric')!r} is not one of {', '.join(METRICS)}")
    spec = TaskSpec(**raw)
    parts = {s: _read_items(folder / f"{s}.jsonl") if (folder / f"{s}.jsonl").is_file() else [] for s in SPLITS}
    if not parts["test"] and not parts["train"]:
        raise TaskFileError(f"{folder}: no train.jsonl or test.jsonl")
    seen = {it.key for it in parts["train"]}
    for split in ("valid", "test"):
        for it in parts[split]:
            if it.key in seen:
                raise TaskFileError(f"{folder / (split + '.jsonl')}: item {it.input!r} is also in train.jsonl "
                                    "(held-out items must be disjoint from the pool)")
    return PromptTask(spec, parts["train"], parts["valid"], parts["test"], folder)


def write_task(folder: str | Path, spec: TaskSpec, splits: dict[str, Iterable[Item]]) -> Path:
    """Write a task folder (task.json and one JSON Lines file per split), each file atomically."""
    folder = Path(folder)
    atomic_write_json(folder / "task.json", asdict(spec), indent=1)
    for split, items in splits.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        lines = (strict_json({k: v for k, v in asdict(it).items() if v or k in ("input", "output")}, str(folder))
                 for it in items)
        atomic_write_text(folder / f"{split}.jsonl", "".join(line + "\n" for line in lines))
    return folder
