"""One `--lm` path for a recognizer: an ARPA file (word n-gram) or a GPT model folder (trained in the recognizer's
own units), turned into the weighted scorers of `DecodeOptions` (fused) or its rescorers."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from malsori.decode.gpt_lm import GPTScorer
from malsori.decode.scorers import WeightedScorer
from malsori.decode.word_lm import WordCountScorer, WordPieces, word_lm_scorers
from malsori.errors import MalsoriError
from malsori.lm.ngram import NgramLM
from malsori.tokenizer import Tokenizer


def is_neural_lm(path: str | os.PathLike) -> bool:
    """True for a model folder (a GPT), False for a file (an ARPA LM)."""
    return Path(path).is_dir()


def load_gpt_scorer(path: str | os.PathLike, tokenizer: Tokenizer, device: str | torch.device = "cpu") -> GPTScorer:
    """The GPT of a model folder, or of an adapter folder on its base (`malsori.llm.adapters`), as a scorer for a
    recognizer with `tokenizer`; its units must be the same."""
    from malsori.llm.adapters import AdaptedLM
    from malsori.llm.adapters import load_lm as load_lm_folder

    m = load_lm_folder(path)  # refuses a model of another task
    pieces = lambda t: (t.kind, [t.id_to_piece(i) for i in range(t.vocab_size)])  # noqa: E731
    if pieces(m.tokenizer) != pieces(tokenizer):
        raise MalsoriError(f"{m.path / 'tokenizer.json'}: the LM's units differ from the recognizer's ({m.tokenizer.kind}, "
                           f"{m.tokenizer.vocab_size} tokens vs {tokenizer.kind}, {tokenizer.vocab_size}); train the LM "
                           "with data.tokenizer_dir = the recognizer's model folder")
    model = m.model.to(device)
    if isinstance(model, AdaptedLM):  # LoRA is inside the GPT's layers; a soft prompt is read before each sentence
        return GPTScorer(model.gpt, tokenizer.special_ids.eos, model.prompt.vectors if model.prompt is not None else None)
    return GPTScorer(model, tokenizer.special_ids.eos)


def load_lm(path: str | os.PathLike, tokenizer: Tokenizer, device: str | torch.device = "cpu") -> NgramLM | GPTScorer:
    """An ARPA file's word n-gram LM, or a model folder's GPT as a scorer for a recognizer with `tokenizer`."""
    if is_neural_lm(path):
        return load_gpt_scorer(path, tokenizer, device)
    if not Path(path).is_file():
        raise MalsoriError(f"{path}: --lm: no such file or folder")
    return NgramLM.read_arpa(path)


def lm_scorers(lm: str | os.PathLike | NgramLM | GPTScorer, tokenizer: Tokenizer, weight: float, word_bonus: float = 0.0,
               lookahead: bool = True, unk_logprob: float | None = None,
               device: str | torch.device = "cpu") -> tuple[WeightedScorer, ...]:
    """The scorers of LM fusion or rescoring: "lm" (weight λ: a word n-gram, or a GPT scoring every token; `lm` is
    one of them or the path `load_lm` reads) and "words" (weight β: 1 per completed word); those of weight 0 are
    left out. `lookahead` and `unk_logprob` are the word n-gram's (a GPT scores partial words itself)."""
    if isinstance(lm, (str, os.PathLike)):
        lm = load_lm(lm, tokenizer, device)
    if isinstance(lm, NgramLM):
        return word_lm_scorers(lm, tokenizer, weight, word_bonus, lookahead, unk_logprob)
    if not lookahead or unk_logprob is not None:
        raise MalsoriError("a GPT scores every token itself; --no-lm-lookahead and --unk-logprob are for ARPA LMs")
    out = []
    if weight != 0:
        out.append(WeightedScorer("lm", lm, weight))
    if word_bonus != 0:
        out.append(WeightedScorer("words", WordCountScorer(WordPieces.of(tokenizer)), word_bonus))
    return tuple(out)
