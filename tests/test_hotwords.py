"""Hotwords (malsori/decode/hotwords.py): the context graph's scores on hand-made phrase sets (overlapping phrases,
a phrase extending another, a failed partial match) equal hand-computed ones; a hypothesis' total equals the
occurrences counted independently; in every search weight 0 changes nothing and the reported part is that count;
a hotword wins a tie; the sherpa-onnx file format and its errors."""

from __future__ import annotations

import random

import pytest
import torch
from test_lm_fusion import CHARS, _spelled
from tests.helpers.searches import LABELS, V, summary, with_scorers

from malsori.decode.ctc import ctc_prefix_beam_search
from malsori.decode.hotwords import HotwordScorer, HotwordsError
from malsori.decode.scorers import WeightedScorer
from malsori.tokenizer import SPECIAL_IDS, CharTokenizer

EOS, BLANK = SPECIAL_IDS.eos, SPECIAL_IDS.blank
# P1 = 5 6 (boost 1), P2 = 6 (boost 2, a suffix of P1), P3 = 5 6 7 (boost 0.5, extends P1; its shared prefix
# earns P1's larger boost): credits P1 = 2, P2 = 2, P3 = 1 + 1 + 0.5 = 2.5
HAND = [((5, 6), 1.0), ((6,), 2.0), ((5, 6, 7), 0.5)]


def walk(scorer: HotwordScorer, tokens: list[int]) -> tuple[list[float], float]:
    """Per-token scores of one hypothesis, and its final score."""
    state, steps = scorer.init_state(1), []
    for t in tokens:
        scores, state = scorer.score(state)
        steps.append(float(scores[0, t]))
        state = scorer.extend(state, torch.tensor([0]), torch.tensor([t]))
    return steps, float(scorer.final_score(state)[0])


@pytest.mark.parametrize("tokens, steps, final", [
    ([5, 6, 7], [1.0, 3.0, 2.5], 0.0),  # P1 completes (and P2, its suffix): 2 + 2; then P3: 2.5
    ([5, 7], [1.0, -1.0], 0.0),  # a failed partial match gives its bonus back
    ([5], [1.0], -1.0),  # ... and so does one the output ends in
    ([5, 5, 6], [1.0, 0.0, 3.0], 0.0),  # the second 5 restarts the match: nothing lost, nothing gained
    ([6, 6], [2.0, 2.0], 0.0),  # P2 twice
    ([5, 6, 8], [1.0, 3.0, 0.0], 0.0),  # P1 complete: leaving P3 takes back nothing
    ([5, BLANK, 6], [1.0, 0.0, 3.0], 0.0),  # blank is not a label
])
def test_hand_computed_scores(tokens, steps, final) -> None:
    scorer = HotwordScorer(HAND, vocab_size=10)
    got_steps, got_final = walk(scorer, tokens)
    assert got_steps == pytest.approx(steps) and got_final == pytest.approx(final)
    scores, _ = scorer.score(scorer.extend(scorer.init_state(1), torch.tensor([0]), torch.tensor([5])))
    assert float(scores[0, EOS]) == pytest.approx(-1.0)  # eos ends the output: like final_score
    assert scorer.max_score == pytest.approx(3.0)


def occurrences_credit(phrases: list[tuple[tuple[int, ...], float]], tokens: list[int]) -> float:
    """Σ over every occurrence (overlaps too) of every phrase of its credit, counted by brute force."""
    def credit(p):
        return sum(max(b for q, b in phrases if q[: i + 1] == p[: i + 1]) for i in range(len(p)))
    return sum(credit(p) * sum(tuple(tokens[i : i + len(p)]) == p for i in range(len(tokens) - len(p) + 1))
               for p, _ in phrases)


def test_totals_equal_the_occurrences_on_random_phrase_sets() -> None:
    rng = random.Random(0)
    for _ in range(40):
        phrases = [(tuple(rng.choice([3, 4, 5]) for _ in range(rng.randint(1, 3))), rng.choice([0.5, 1.0, 2.0]))
                   for _ in range(rng.randint(1, 4))]
        phrases = list({p: b for p, b in phrases}.items())  # a phrase once
        scorer = HotwordScorer(phrases, vocab_size=6)
        for _ in range(10):
            tokens = [rng.choice([3, 4, 5]) for _ in range(rng.randint(0, 8))]
            steps, final = walk(scorer, tokens)
            assert sum(steps) + final == pytest.approx(occurrences_credit(phrases, tokens)), (phrases, tokens)



def test_weight_zero_changes_nothing_and_the_part_is_the_occurrences(search) -> None:
    phrases = [((LABELS[0], LABELS[1]), 1.0), ((LABELS[2],), 0.5), ((LABELS[3], LABELS[3]), 2.0)]
    scorer = HotwordScorer(phrases, V)
    before = search.run(search.base)
    assert [summary(h) for h in search.run(with_scorers(search.base, WeightedScorer("hot", scorer, 0.0)))] == \
        [summary(h) for h in before]
    for best in search.run(with_scorers(search.base, WeightedScorer("hot", scorer, 0.7))):
        for hyp in best.nbest or [best]:
            assert hyp.scores["hot"] == pytest.approx(occurrences_credit(phrases, hyp.tokens), abs=1e-5)
            total = sum(w * hyp.scores[name] for name, w in search.parts.items()) + 0.7 * hyp.scores["hot"]
            assert hyp.score == pytest.approx(total, abs=1e-4)


def test_a_hotword_wins_a_tie(tmp_path) -> None:
    log_probs = _spelled({"▁": 1.0}, {"t": 1.0}, {"h": 1.0}, {"e": 0.5, "i": 0.5}, {"i": 0.5, "e": 0.5}, {"r": 1.0})
    tokenizer = CharTokenizer(CHARS)
    for word in ("their", "thier"):
        (tmp_path / "hot.txt").write_text(f"{word.upper()} :2\n\nother phrase\n")
        scorer = HotwordScorer.from_file(tmp_path / "hot.txt", tokenizer)
        best = ctc_prefix_beam_search(log_probs, torch.tensor([6]), 8, scorers=(WeightedScorer("hot", scorer, 1.0),))[0]
        assert tokenizer.decode(best.tokens) == word
        assert best.scores["hot"] == pytest.approx(2.0 * 6)  # ▁ + 5 letters, boost 2 each


def test_file_errors(tmp_path) -> None:
    tokenizer = CharTokenizer(CHARS)
    with pytest.raises(HotwordsError, match="cannot read"):
        HotwordScorer.from_file(tmp_path / "missing.txt", tokenizer)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(HotwordsError, match="no hotwords"):
        HotwordScorer.from_file(tmp_path / "empty.txt", tokenizer)
    (tmp_path / "punct.txt").write_text("fine\n?! :3\n")
    with pytest.raises(HotwordsError, match=r"punct.txt:2"):
        HotwordScorer.from_file(tmp_path / "punct.txt", tokenizer)
