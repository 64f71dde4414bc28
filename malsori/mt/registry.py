"""Translators by name: each family registers its builder (`@register_translator("transformer")`), and
`build_translator` makes the one a config names, as `build_lm` does for language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from malsori.errors import ConfigError

if TYPE_CHECKING:
    from malsori.mt.model import TranslatorConfig

TranslatorBuilder = Callable[["TranslatorConfig", int], nn.Module]
TRANSLATORS: dict[str, TranslatorBuilder] = {}


def register_translator(name: str) -> Callable[[TranslatorBuilder], TranslatorBuilder]:
    """Decorator: make `builder(cfg, vocab_size) -> Translator` available as `TranslatorConfig.kind = name`."""

    def wrap(builder: TranslatorBuilder) -> TranslatorBuilder:
        TRANSLATORS[name] = builder
        return builder

    return wrap


def build_translator(cfg: "TranslatorConfig", vocab_size: int) -> nn.Module:
    """The translator `cfg.kind` names, over a (joint) vocabulary of `vocab_size` tokens."""
    import malsori.mt.model  # noqa: F401  (its families register themselves)

    if cfg.kind not in TRANSLATORS:
        raise ConfigError(f"model.kind: unknown translator '{cfg.kind}' (known: {', '.join(sorted(TRANSLATORS))})")
    return TRANSLATORS[cfg.kind](cfg, vocab_size)
