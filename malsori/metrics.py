"""Word and character error rates (jiwer) after the shared text normalizer, overall and per utterance."""

from __future__ import annotations

from dataclasses import dataclass

import jiwer


@dataclass
class ErrorRates:
    """Corpus-level error counts and rates."""

    wer: float  # word errors / reference words
    cer: float  # character errors / reference characters (spaces count as characters)
    words: int  # reference words
    chars: int  # reference characters
    substitutions: int  # word substitutions
    deletions: int  # word deletions
    insertions: int  # word insertions
    utterances: int  # scored utterances

    def line(self) -> str:
        return (f"WER {100 * self.wer:.2f}% (S {self.substitutions} D {self.deletions} I {self.insertions} / {self.words} words)  "
                f"CER {100 * self.cer:.2f}%  over {self.utterances} utterances")


def _nonempty(refs: list[str], hyps: list[str]) -> tuple[list[str], list[str], int, int]:
    """jiwer needs a non-empty reference; empty references add their hypothesis length as insertions."""
    keep = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    extra_w = sum(len(h.split()) for r, h in zip(refs, hyps) if not r.strip())
    extra_c = sum(len(h) for r, h in zip(refs, hyps) if not r.strip())
    return [r for r, _ in keep], [h for _, h in keep], extra_w, extra_c


def error_rates(refs: list[str], hyps: list[str]) -> ErrorRates:
    """Score normalized references against normalized hypotheses."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    r, h, extra_w, extra_c = _nonempty(refs, hyps)
    if not r:
        return ErrorRates(float(extra_w > 0), float(extra_c > 0), 0, 0, 0, 0, extra_w, len(refs))
    w = jiwer.process_words(r, h)
    c = jiwer.process_characters(r, h)
    words = w.hits + w.substitutions + w.deletions
    chars = c.hits + c.substitutions + c.deletions
    return ErrorRates(
        wer=(w.substitutions + w.deletions + w.insertions + extra_w) / max(1, words),
        cer=(c.substitutions + c.deletions + c.insertions + extra_c) / max(1, chars),
        words=words, chars=chars, substitutions=w.substitutions, deletions=w.deletions,
        insertions=w.insertions + extra_w, utterances=len(refs),
    )


def utterance_errors(ref: str, hyp: str) -> tuple[int, int, int, int]:
    """(word errors, reference words, char errors, reference chars) for one normalized pair."""
    if not ref.strip():
        return len(hyp.split()), 0, len(hyp), 0
    w = jiwer.process_words(ref, hyp)
    c = jiwer.process_characters(ref, hyp)
    return (w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions,
            c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)
