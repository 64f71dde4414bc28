"""Translation quality with sacrebleu (never a hand-written BLEU): corpus BLEU against every reference a source has,
chrF, and their signatures, so a number can be reproduced. For Korean (no reliable word split) BLEU is
character-level (`tokenize="char"`) and chrF is the number to quote."""

from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

from malsori.errors import MalsoriError


@dataclass
class Scores:
    """Corpus scores of one system output."""

    bleu: float  # corpus BLEU, 0-100
    chrf: float  # chrF (character n-gram F-score, β = 2), 0-100
    bleu_signature: str  # sacrebleu's signature: references, case, tokenization, smoothing, version
    chrf_signature: str
    sentences: int  # sources scored
    references: int  # most references any source has

    def line(self) -> str:
        return f"BLEU {self.bleu:.2f}, chrF {self.chrf:.2f} ({self.sentences:,} sentences, up to {self.references} references)"


def score(hypotheses: list[str], references: list[list[str]], char_level: bool = False) -> Scores:
    """Corpus BLEU and chrF of `hypotheses` against each one's references (any number per sentence, at least one);
    `char_level`: BLEU over characters (Korean, Japanese, Chinese)."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise MalsoriError(f"{len(hypotheses)} translations for {len(references)} reference sets: nothing to score")
    if any(not refs for refs in references):
        raise MalsoriError("every source needs at least one reference")
    most = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]  # None: no k-th reference
    bleu, chrf = BLEU(tokenize="char" if char_level else "13a"), CHRF()
    b, c = bleu.corpus_score(hypotheses, streams), chrf.corpus_score(hypotheses, streams)
    return Scores(b.score, c.score, str(bleu.get_signature()), str(chrf.get_signature()), len(hypotheses), most)
