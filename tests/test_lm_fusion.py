"""Word n-gram LM fusion (malsori/decode/word_lm.py) in every search that takes extra scorers: weight 0 changes
nothing; the reported total is acoustic + λ · the LM's own sentence log-probability (recomputed with
`NgramLM.score_sentence`, </s> included) + β · words; the n-best is sorted and has no duplicates; on a tie between
two spellings the LM picks the one it knows; the lookahead bound is an upper bound and telescopes. N-best rescoring
(`lm_rescore`, `DecodeOptions.rescorers`): weight 0 keeps the order, the new order is the combined score's."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tests.helpers.searches import V, summary, with_scorers

from malsori.decode.ctc import ctc_prefix_beam_search
from malsori.decode.rescore import lm_rescore
from malsori.decode.scorers import WeightedScorer
from malsori.decode.word_lm import UNK_CHAR, WordCountScorer, WordNgramScorer, WordPieces, word_lm_scorers
from malsori.errors import ConfigError
from malsori.lm.ngram import NgramLM
from malsori.tokenizer import SPECIALS, WORD

# V = 9 ids, as the toy models of tests/helpers/searches.py; subword pieces, three of them word starts, so outputs have words
TOY_PIECES = [*SPECIALS, WORD + "a", "b", WORD + "c", "d", WORD, "e"]
TOY_TEXT = ["ab cd", "a bed", "abe cd", "c ab", "bed a cd", "de ab", "cd cd a", "ab bed", "ce"]
assert len(TOY_PIECES) == V


def words_of(tokens: list[int], pieces: list[str]) -> list[str]:
    """The words a token sequence spells, recomputed on its own (the ASR <unk> is a character in no LM word)."""
    text = "".join(UNK_CHAR if t == SPECIALS.index("<unk>") else pieces[t] for t in tokens)
    return text.replace(WORD, " ").split()


@pytest.fixture(scope="module")
def toy_lm() -> NgramLM:
    return NgramLM.train(TOY_TEXT, order=3)



def test_weight_zero_changes_nothing(search, toy_lm) -> None:
    scorer, counter = WordNgramScorer(toy_lm, WordPieces(TOY_PIECES)), WordCountScorer(WordPieces(TOY_PIECES))
    assert word_lm_scorers(toy_lm, WordPieces(TOY_PIECES), 0.0, 0.0) == ()
    before = search.run(search.base)
    after = search.run(with_scorers(search.base, WeightedScorer("lm", scorer, 0.0), WeightedScorer("words", counter, 0.0)))
    assert [summary(h) for h in after] == [summary(h) for h in before]
    assert not scorer._rows  # never run


@pytest.mark.parametrize("lookahead", [True, False])
def test_total_is_acoustic_plus_weighted_sentence_logprob_plus_word_bonus(search, toy_lm, lookahead: bool) -> None:
    weight, bonus = 0.7, 1.3
    options = with_scorers(search.base, *word_lm_scorers(toy_lm, WordPieces(TOY_PIECES), weight, bonus, lookahead))
    hyps = search.run(options)
    assert any(words_of(h.tokens, TOY_PIECES) for best in hyps for h in best.nbest or [best])
    for best in hyps:
        alts = best.nbest or [best]
        for hyp in alts:
            words = words_of(hyp.tokens, TOY_PIECES)
            assert hyp.scores["lm"] == pytest.approx(toy_lm.score_sentence(words), abs=1e-4)
            assert hyp.scores.get("words", 0.0) == len(words)
            acoustic = sum(w * hyp.scores[name] for name, w in search.parts.items())
            assert hyp.score == pytest.approx(acoustic + weight * hyp.scores["lm"] + bonus * len(words), abs=1e-4)
        assert [h.score for h in alts] == sorted((h.score for h in alts), reverse=True)
        assert len({tuple(h.tokens) for h in alts}) == len(alts)


CHARS = [*SPECIALS, WORD, "'", *"abcdefghijklmnopqrstuvwxyz"]


def _spelled(*frames: dict[str, float]) -> torch.Tensor:
    """CTC log-probs [1, T, V] from per-frame probabilities of named characters (blank gets a little of the rest)."""
    out = torch.full((1, len(frames), len(CHARS)), 1e-6)
    for t, probs in enumerate(frames):
        for ch, p in probs.items():
            out[0, t, CHARS.index(ch)] = p
        out[0, t, 0] += 1e-3
    return (out / out.sum(-1, keepdim=True)).log()


def test_the_lm_picks_the_spelling_it_knows() -> None:
    """"their" and "thier" (and "ther", "thir") tie acoustically; the LM knows only "their"."""
    lm = NgramLM.train(["i like their house", "their dog is big", "they left their car"], order=3)
    log_probs = _spelled({WORD: 1.0}, {"t": 1.0}, {"h": 1.0}, {"e": 0.5, "i": 0.5}, {"i": 0.5, "e": 0.5}, {"r": 1.0})
    lens = torch.tensor([log_probs.size(1)])
    plain = ctc_prefix_beam_search(log_probs, lens, beam_size=8, nbest=4)[0]
    spelled = {"".join(CHARS[t] for t in h.tokens).strip(WORD) for h in plain.nbest}
    assert spelled == {"their", "thier", "ther", "thir"}
    assert max(h.score for h in plain.nbest) - min(h.score for h in plain.nbest) < 1e-2  # a tie (blank aside)
    for lookahead in (True, False):
        scorers = word_lm_scorers(lm, WordPieces(CHARS), 0.5, 0.0, lookahead)
        best = ctc_prefix_beam_search(log_probs, lens, beam_size=8, nbest=4, scorers=scorers)[0]
        assert "".join(CHARS[t] for t in best.tokens) == WORD + "their"
        assert best.scores["lm"] == pytest.approx(lm.score_sentence(["their"]), abs=1e-4)


def test_a_fixed_unk_score_scores_unknown_words() -> None:
    lm = NgramLM.train(["their dog"], order=2)
    pieces = WordPieces(CHARS)
    ids = [CHARS.index(c) for c in "▁thier▁dog"]
    for lookahead in (True, False):
        scorer = WordNgramScorer(lm, pieces, lookahead, unk_logprob=-7.0)
        state, total = scorer.init_state(1), 0.0
        for t in ids:
            scores, state = scorer.score(state)
            total += float(scores[0, t])
            state = scorer.extend(state, torch.tensor([0]), torch.tensor([t]))
        total += float(scorer.final_score(state)[0])
        assert total == pytest.approx(-7.0 + lm.logprob("dog", ["<unk>"]) + lm.logprob("</s>", ["dog"]), abs=1e-4)


def test_lookahead_is_an_upper_bound_that_shrinks(toy_lm) -> None:
    """L(h, p) ≥ log P(w | h) for every word w with prefix p (and ≥ log P(<unk> | h)), and L(h, p + c) ≤ L(h, p)."""
    scorer = WordNgramScorer(toy_lm, WordPieces(TOY_PIECES))
    words = [w for w in toy_lm.vocab if w.isalpha()]
    for hist in [("<s>",), ("<s>", "a"), ("bad",), ("dead",), ()]:
        for p in {w[:k] for w in words for k in range(1, len(w) + 1)} | {"x", "bx"}:
            bound = scorer._bound(hist, p)
            assert bound >= toy_lm.logprob("<unk>", hist) - 1e-9
            for w in words:
                if w.startswith(p):
                    assert bound >= toy_lm.logprob(w, hist) - 1e-9, (hist, p, w)
            if len(p) > 1:
                assert bound <= scorer._bound(hist, p[:-1]) + 1e-12
            assert bound <= 0.0


def test_every_step_scores_at_most_zero_and_words_count_one(toy_lm) -> None:
    pieces = WordPieces(TOY_PIECES)
    scorer, counter = WordNgramScorer(toy_lm, pieces), WordCountScorer(pieces)
    g = torch.Generator().manual_seed(0)
    s, c = scorer.init_state(4), counter.init_state(4)
    for _ in range(12):
        scores, s = scorer.score(s)
        counts, c = counter.score(c)
        assert float(scores.max()) <= 0.0 and not math.isnan(float(scores.sum()))
        assert set(counts.unique().tolist()) <= {0.0, 1.0}
        tokens = torch.randint(3, V, (4,), generator=g)
        s, c = scorer.extend(s, torch.arange(4), tokens), counter.extend(c, torch.arange(4), tokens)


# ---- n-best rescoring --------------------------------------------------------------------------------------------
def _no_eos(logits: torch.Tensor) -> torch.Tensor:
    """CTC log-probs from random logits, eos ruled out (a tokenizer never emits it as a label)."""
    logits[..., SPECIALS.index("<sos/eos>")] = -50.0
    return logits.log_softmax(-1)


def test_rescoring_with_weight_zero_leaves_the_order_unchanged(toy_lm) -> None:
    g = torch.Generator().manual_seed(1)
    log_probs = _no_eos(torch.randn(2, 12, V, generator=g).mul(2.0))
    first = ctc_prefix_beam_search(log_probs, torch.tensor([12, 9]), beam_size=6, nbest=6)
    scorer = WordNgramScorer(toy_lm, WordPieces(TOY_PIECES))
    again = lm_rescore([h.nbest for h in first], [WeightedScorer("lm", scorer, 0.0)])
    for old, new in zip(first, again):
        assert [(h.tokens, h.score) for h in new.nbest] == [(h.tokens, h.score) for h in old.nbest]
    assert not scorer._rows


def test_rescoring_ranks_by_the_combined_score(toy_lm) -> None:
    """New score = first-pass score + λ · sentence log-prob + β · words, recomputed on its own; best first."""
    g = torch.Generator().manual_seed(2)
    log_probs = _no_eos(torch.randn(2, 14, V, generator=g).mul(2.0))
    first = ctc_prefix_beam_search(log_probs, torch.tensor([14, 10]), beam_size=8, nbest=8)
    weight, bonus = 0.8, 0.5
    again = lm_rescore([h.nbest for h in first], word_lm_scorers(toy_lm, WordPieces(TOY_PIECES), weight, bonus))
    for old, new in zip(first, again):
        expect = {}
        for h in old.nbest:
            words = words_of(h.tokens, TOY_PIECES)
            expect[tuple(h.tokens)] = h.score + weight * toy_lm.score_sentence(words) + bonus * len(words)
        assert [tuple(h.tokens) for h in new.nbest] == sorted(expect, key=expect.get, reverse=True)
        assert [h.score for h in new.nbest] == pytest.approx([expect[tuple(h.tokens)] for h in new.nbest], abs=1e-4)
        assert any(tuple(a.tokens) != tuple(b.tokens) for a, b in zip(old.nbest, new.nbest))  # the LM changed the order


def test_rescorers_in_every_beam_method(search, toy_lm) -> None:
    """`DecodeOptions.rescorers`: the beam methods re-rank their whole beam; greedy searches and streams refuse."""
    weight, bonus = 0.6, 0.4
    options = with_scorers(search.base, rescorers=word_lm_scorers(toy_lm, WordPieces(TOY_PIECES), weight, bonus))
    if search.greedy or search.run.__qualname__.startswith("_streamed"):
        with pytest.raises(ConfigError, match="rescorers"):
            search.run(options)
        return
    plain = search.run(dataclasses.replace(search.base, nbest=search.base.beam_size))
    for old, new in zip(plain, search.run(options)):
        assert len(new.nbest) == min(search.base.nbest, len(old.nbest))
        for hyp in new.nbest:
            words = words_of(hyp.tokens, TOY_PIECES)
            before = next(h for h in old.nbest if h.tokens == hyp.tokens)
            assert hyp.score == pytest.approx(before.score + weight * toy_lm.score_sentence(words) + bonus * len(words), abs=1e-4)


# ---- the command line's options ----------------------------------------------------------------------------------
def test_command_line_options_build_the_scorers(tmp_path, toy_lm) -> None:
    from click.testing import CliRunner

    from malsori.cli import main
    from malsori.commands.recognize import decode_options
    from malsori.decode.hotwords import HotwordScorer
    from malsori.tokenizer import CharTokenizer

    CharTokenizer(CHARS).save(tmp_path)
    toy_lm.write_arpa(tmp_path / "lm.arpa")
    (tmp_path / "hot.txt").write_text("bad cab :2\n")
    flags = dict(lm_path=tmp_path / "lm.arpa", lm_weight=0.3, word_bonus=1.5, no_lm_lookahead=True, unk_logprob=-9.0,
                 lm_rescore=False, hotwords=tmp_path / "hot.txt", hotwords_score=1.5)
    fused = decode_options(tmp_path, "beam", 4, **flags)
    assert [(s.name, s.weight) for s in fused.scorers] == [("lm", 0.3), ("words", 1.5), ("hotwords", 1.0)]
    lm_scorer = fused.scorers[0].scorer
    assert not lm_scorer.lookahead and lm_scorer.unk_logprob == -9.0 and isinstance(fused.scorers[2].scorer, HotwordScorer)
    rescored = decode_options(tmp_path, "beam", 4, **{**flags, "lm_rescore": True})
    assert [s.name for s in rescored.rescorers] == ["lm", "words"] and [s.name for s in rescored.scorers] == ["hotwords"]
    for extra in (["--lm-weight", "0.2"], ["--lm-rescore"], ["--hotwords-score", "3"]):
        result = CliRunner().invoke(main, ["transcribe", str(tmp_path), "a.wav", *extra])
        assert result.exit_code == 2 and "needs --" in result.output and "Traceback" not in result.output, result.output
