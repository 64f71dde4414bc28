"""Translators by name: each family registers its builder (`@register_translator("transformer")`), and
`malsori.mt.model.build_translator` makes the one a config names (this module imports no family, so the families
can import it)."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn


TranslatorBuilder = Callable[[Any, int], nn.Module]  # (a malsori.mt.model.TranslatorConfig, vocab size) -> translator
TRANSLATORS: dict[str, TranslatorBuilder] = {}


def register_translator(name: str) -> Callable[[TranslatorBuilder], TranslatorBuilder]:
    """Decorator: make `builder(cfg, vocab_size) -> Translator` available as `TranslatorConfig.kind = name`."""

    def wrap(builder: TranslatorBuilder) -> TranslatorBuilder:
        TRANSLATORS[name] = builder
        return builder

    return wrap
