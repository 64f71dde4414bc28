"""Tokenizers: characters or SentencePiece (BPE, unigram) behind one interface, with the same reserved ids.

Every tokenizer has id 0 = `<blank>` (CTC blank and padding), 1 = `<unk>`, 2 = `<sos/eos>`; `encode` never
emits 0 or 2. Words start with the piece prefix `▁`, as in SentencePiece, so `is_word_start` works for both.
Text is taken as given: callers normalize it first (malsori.text.normalize).
On disk a tokenizer is a folder with `tokenizer.json` (kind, pieces for char) and `tokenizer.model` (SentencePiece).
"""

from __future__ import annotations

import io
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from malsori.data.manifest import atomic_write_text
from malsori.errors import MalsoriError

SPECIALS = ("<blank>", "<unk>", "<sos/eos>")  # ids 0, 1, 2 in every tokenizer
WORD = "▁"  # marks the first piece of a word
KINDS = ("char", "bpe", "unigram")


@dataclass(frozen=True)
class SpecialIds:
    """The reserved ids every tokenizer has; models and searches read them from here, never as literals."""

    blank: int = 0  # CTC / transducer blank, also padding
    unk: int = 1  # unknown symbol
    sos: int = 2  # start of an output: the attention decoder's first input
    eos: int = 2  # end of an output (the same id as sos)


SPECIAL_IDS = SpecialIds()


class Tokenizer(ABC):
    """Text ↔ token ids; ids 0-2 are reserved (`SPECIAL_IDS`: blank, unk, sos/eos)."""

    kind: str
    special_ids: SpecialIds = SPECIAL_IDS  # the reserved ids (the same in every tokenizer)

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, reserved ones included."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of normalized text (never blank or sos/eos; unknown symbols become unk)."""

    @abstractmethod
    def id_to_piece(self, i: int) -> str:
        """The piece of id `i`."""

    @abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def _save_files(self, folder: Path) -> dict:
        """Write the kind's own files; return what tokenizer.json should hold besides the kind."""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; blank and sos/eos are dropped."""
        return self._decode([int(i) for i in ids if int(i) not in (self.special_ids.blank, self.special_ids.eos)])

    def is_word_start(self, i: int) -> bool:
        """True if piece `i` begins a new word (used to turn token times into word times)."""
        return i > self.special_ids.eos and self.id_to_piece(i).startswith(WORD)

    def save(self, folder: str | Path) -> None:
        """Write the tokenizer into `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "vocab_size": self.vocab_size, **self._save_files(folder)}
        atomic_write_text(folder / "tokenizer.json", json.dumps(meta, ensure_ascii=False, indent=1) + "\n")


class CharTokenizer(Tokenizer):
    """One id per character; each word starts with `▁` (which stands for the space)."""

    kind = "char"

    def __init__(self, pieces: list[str]):
        self.pieces = list(pieces)
        self.piece_ids = {p: i for i, p in enumerate(self.pieces)}

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in text.replace(WORD, " ").split():
            ids.append(self.piece_ids[WORD])
            ids.extend(self.piece_ids.get(ch, self.special_ids.unk) for ch in word)
        return ids

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]

    def _decode(self, ids: list[int]) -> str:
        pieces = ("⁇" if i == self.special_ids.unk else self.pieces[i] for i in ids)
        return "".join(pieces).replace(WORD, " ").strip()

    def _save_files(self, folder: Path) -> dict:
        return {"pieces": self.pieces}


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (BPE or unigram) held as its serialized bytes."""

    def __init__(self, kind: str, model: bytes):
        self.kind, self.model = kind, model
        self.sp = spm.SentencePieceProcessor(model_proto=model)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def _decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def _save_files(self, folder: Path) -> dict:
        (folder / "tokenizer.model").write_bytes(self.model)
        return {"model": "tokenizer.model"}


def _train_char(texts: list[str], vocab_size: int | None) -> CharTokenizer:
    counts = Counter(ch for t in texts for ch in t.replace(WORD, " ") if not ch.isspace())
    if vocab_size is not None:
        room = vocab_size - len(SPECIALS) - 1
        if room > len(counts):
            raise MalsoriError(f"vocab size {vocab_size} is too large: the text has only {len(counts)} distinct "
                               f"characters (use at most {len(counts) + len(SPECIALS) + 1}, or no vocab size)")
        if room < 1:
            raise MalsoriError(f"vocab size {vocab_size} is too small (the 4 reserved pieces need more room)")
        counts = Counter(dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:room]))
    return CharTokenizer([*SPECIALS, WORD, *sorted(counts)])


def _train_sentencepiece(kind: str, texts: list[str], vocab_size: int | None) -> SentencePieceTokenizer:
    if vocab_size is None:
        raise MalsoriError(f"a {kind} tokenizer needs a vocab size")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type=kind, vocab_size=vocab_size,
            character_coverage=1.0, normalization_rule_name="identity", num_threads=1, minloglevel=2,
            pad_id=SPECIAL_IDS.blank, pad_piece=SPECIALS[0], unk_id=SPECIAL_IDS.unk, unk_piece=SPECIALS[1],
            bos_id=SPECIAL_IDS.sos, bos_piece=SPECIALS[2],
            eos_id=-1)
    except RuntimeError as e:
        msg = str(e)
        if m := re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", msg):
            raise MalsoriError(f"vocab size {m[1]} is too large for this text: use at most {m[2]}") from None
        if m := re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", msg):
            raise MalsoriError(f"vocab size {m[1]} is too small: the text's characters need at least "
                               f"{m[2]}") from None
        raise MalsoriError(f"SentencePiece training failed: {msg.splitlines()[0]}") from None
    return SentencePieceTokenizer(kind, model.getvalue())


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None,
                    out_dir: str | Path | None = None) -> Tokenizer:
    """Train a `kind` tokenizer ("char", "bpe" or "unigram") on normalized texts; save it if `out_dir` is given.

    Training is deterministic. For char, `vocab_size=None` keeps every character seen; a number keeps the most
    frequent ones.
    """
    if kind not in KINDS:
        raise MalsoriError(f"unknown tokenizer kind {kind!r} (use one of {', '.join(KINDS)})")
    lines = [t.strip() for t in texts if t and t.strip()]
    if not lines:
        raise MalsoriError("no text to train a tokenizer on")
    tok = _train_char(lines, vocab_size) if kind == "char" else _train_sentencepiece(kind, lines, vocab_size)
    if out_dir is not None:
        tok.save(out_dir)
    return tok


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load a tokenizer written by `Tokenizer.save`."""
    meta_path = Path(folder) / "tokenizer.json"
    if not meta_path.is_file():
        raise MalsoriError(f"{meta_path}: tokenizer not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind = meta["kind"]
        if kind == "char":
            tok: Tokenizer = CharTokenizer([str(p) for p in meta["pieces"]])
        elif kind in KINDS:
            model_path = meta_path.parent / meta["model"]
            if not model_path.is_file():
                raise MalsoriError(f"{model_path}: SentencePiece model not found")
            try:
                tok = SentencePieceTokenizer(kind, model_path.read_bytes())
            except (RuntimeError, OSError) as e:
                raise MalsoriError(f"{model_path}: not a SentencePiece model ({str(e).splitlines()[0]})") from None
        else:
            raise MalsoriError(f"{meta_path}: unknown tokenizer kind {kind!r}")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise MalsoriError(f"{meta_path}: malformed tokenizer file ({type(e).__name__}: {e})") from None
    if [tok.id_to_piece(i) for i in range(min(3, tok.vocab_size))] != list(SPECIALS):
        raise MalsoriError(f"{meta_path}: ids 0-2 must be {', '.join(SPECIALS)}")
    return tok
