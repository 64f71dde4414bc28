"""Scoring a task's outputs by the metric it declares: exact match (accuracy), character error rate (jiwer, on the
text as written: case and punctuation count), BLEU or chrF (sacrebleu, corpus level)."""

from __future__ import annotations

from malsori.metrics import error_rates

HIGHER_IS_BETTER = {"exact": True, "cer": False, "bleu": True, "chrf": True}
SCALE = {"exact": 1.0, "cer": 1.0, "bleu": 100.0, "chrf": 100.0}  # the metric's best value


def score(metric: str, refs: list[str], hyps: list[str]) -> float:
    """The corpus score of hypotheses against references: exact-match accuracy (0–1), CER (0–1+), BLEU or chrF (0–100)."""
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"{len(refs)} references and {len(hyps)} hypotheses")
    if metric == "exact":
        return sum(r.strip() == h.strip() for r, h in zip(refs, hyps)) / len(refs)
    if metric == "cer":
        return error_rates([r.strip() for r in refs], [h.strip() for h in hyps]).cer
    import sacrebleu

    if metric == "bleu":
        return sacrebleu.corpus_bleu(hyps, [refs]).score
    if metric == "chrf":
        return sacrebleu.corpus_chrf(hyps, [refs]).score
    raise ValueError(f"unknown metric {metric!r}")


def as_error(metric: str, value: float) -> float:
    """The score as an error (lower is better, 0 = perfect), the direction the training loop's validation takes."""
    return 1.0 - value / SCALE[metric] if HIGHER_IS_BETTER[metric] else value
