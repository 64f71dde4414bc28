"""Tasks: what a training run learns (speech recognition, language modelling, translation), chosen by the recipe's `task:`.

Each task module defines its run config (RunConfig + data and model sections) and its `Task`; this registry maps
the recipe's name to them, so `malsori train` reads any recipe into the right typed config.
"""

from __future__ import annotations

from pathlib import Path

from malsori.config import apply_overrides, from_dict, load_yaml
from malsori.errors import ConfigError
from malsori.tasks.base import RunConfig, Task


def _tasks() -> dict[str, type[Task]]:
    from malsori.tasks.asr import SpeechTask
    from malsori.tasks.llm import PromptedLMTask
    from malsori.tasks.lm import TextLMTask
    from malsori.tasks.mt import TranslationTask
    from malsori.tasks.speech_llm import SpeechLLMTask

    return {t.name: t for t in (SpeechTask, TextLMTask, PromptedLMTask, TranslationTask, SpeechLLMTask)}


def task_class(name: str) -> type[Task]:
    """The Task class registered as `name` (asr, lm)."""
    tasks = _tasks()
    if name not in tasks:
        raise ConfigError(f"task: unknown task '{name}' (known: {', '.join(sorted(tasks))})")
    return tasks[name]


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Recipe file + `key=value` overrides → the typed config of the task the recipe names (default asr)."""
    data = apply_overrides(load_yaml(path) if path else {}, list(overrides))
    return from_dict(task_class(str(data.get("task", "asr"))).config_class, data)
