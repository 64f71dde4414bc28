"""`Translator` folders in use: text in, text out, batched (`malsori.load(folder).translate([...])`), and the
evaluation of a parallel test file (multi-reference BLEU and chrF with sacrebleu)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from malsori.decode.options import DecodeOptions
from malsori.mt.data import Multi, clean
from malsori.mt.score import Scores, score
from malsori.tokenizer import Tokenizer


@dataclass
class Translation:
    """One translation."""

    text: str  # the translation, detokenized
    tokens: list[int] = field(default_factory=list)  # its token ids
    score: float = 0.0  # log-probability from the search
    nbest: list[str] = field(default_factory=list)  # the n best translations, best first (beam search with nbest > 1)


def pad_batch(rows: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → (tokens [B, S] padded with 0 (blank), lengths [B])."""
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.zeros(len(rows), max(1, int(lens.max())) if rows else 1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device), lens.to(device)


class TextTranslator:
    """A translator model and its tokenizer: `translate(texts, options)`."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.tokenizer = model.to(self.device).eval(), tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "TextTranslator":
        """Load a translation model folder onto `device` (auto, cpu, cuda, cuda:N)."""
        from malsori.pretrained import load_task_model

        m, device = load_task_model(path, "mt", "a translator", device)
        return cls(m.model, m.tokenizer, device)

    @torch.inference_mode()
    def translate(self, texts: str | Sequence[str], options: DecodeOptions | None = None,
                  batch_size: int = 32) -> Translation | list[Translation]:
        """Translate a sentence (→ a Translation) or a list of them (→ a list, in order); sentences are decoded
        `batch_size` at a time, sorted by length so a batch holds similar lengths."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        options = options or DecodeOptions()
        ids = [self.tokenizer.encode(clean(t)) for t in texts]
        out: list[Translation | None] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = [i for i in order[start : start + batch_size] if ids[i]]
            for i in order[start : start + batch_size]:
                if not ids[i]:
                    out[i] = Translation("")
            if not chunk:
                continue
            src, lens = pad_batch([ids[i] for i in chunk], self.device)
            for i, hyp in zip(chunk, self.model.decode(src, lens, options)):
                nbest = [self.tokenizer.decode(h.tokens) for h in (hyp.nbest or [])]
                out[i] = Translation(self.tokenizer.decode(hyp.tokens), hyp.tokens, hyp.score, nbest)
        return out[0] if single else out  # type: ignore[return-value]


@dataclass
class MTEvaluation:
    """Scores of a translator on a test set, its outputs and speed."""

    scores: Scores
    hypotheses: list[str]  # one per source, in test-set order
    seconds: float  # decoding wall time

    def summary(self) -> str:
        speed = self.scores.sentences / max(self.seconds, 1e-9)
        return (f"{self.scores.line()}; {speed:.1f} sentences/s\n{self.scores.bleu_signature}\n{self.scores.chrf_signature}")


def evaluate_translations(translator: TextTranslator, test: list[Multi], options: DecodeOptions | None = None,
                          batch_size: int = 32, char_level: bool = False) -> MTEvaluation:
    """Translate every source of `test` and score it against all its references."""
    t0 = time.perf_counter()
    hyps = [t.text for t in translator.translate([m.source for m in test], options, batch_size)]
    seconds = time.perf_counter() - t0
    return MTEvaluation(score(hyps, [m.references for m in test], char_level), hyps, seconds)


def write_report(path: Path, test: list[Multi], evaluation: MTEvaluation) -> Path:
    """Per-sentence TSV: source, translation, references (joined by ' ||| ')."""
    rows = ["source\ttranslation\treferences"]
    rows += [f"{m.source}\t{h}\t{' ||| '.join(m.references)}" for m, h in zip(test, evaluation.hypotheses)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
