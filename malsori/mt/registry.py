"""Translators by name: each family registers its builder and settings (`@register_translator("transformer",
TransformerMTConfig)`; the two LSTM families share the section `rnn`), and `malsori.mt.model.build_translator` makes
the one a config names (this module imports no family, so the families can import it)."""

from __future__ import annotations

from malsori.tagged import Registry

TRANSLATORS = Registry("translator")  # builder(TranslatorConfig, vocab_size) -> Translator
register_translator = TRANSLATORS.register
