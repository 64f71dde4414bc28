"""The GPT as a scorer (malsori/decode/gpt_lm.py) in every search of tests/helpers/searches.py, in n-best rescoring and
behind `--lm FOLDER`: its scores equal the GPT's own full forward for prefixes of different lengths batched together;
λ = 0 changes nothing, bit for bit, and never runs the GPT; a hypothesis' "lm" part is the GPT's log-probability of
its tokens (then eos where the search scores eos), recomputed by a full forward; a toy GPT trained on one sentence
makes every search output that sentence; rescoring ranks by first-pass score + λ · the recomputed log-probability."""

from __future__ import annotations


import pytest
import torch
from tests.helpers.searches import V, summary, with_scorers

from malsori.config import to_dict
from malsori.decode.ctc import ctc_prefix_beam_search
from malsori.decode.gpt_lm import GPTScorer
from malsori.decode.rescore import lm_rescore
from malsori.decode.scorers import WeightedScorer
from malsori.decode.word_lm import WordNgramScorer
from malsori.errors import MalsoriError
from malsori.lm.gpt import GPT, GPTConfig
from malsori.models.registry import LMConfig
from malsori.nn.state import stack_states
from malsori.tokenizer import SPECIAL_IDS, SPECIALS, WORD, CharTokenizer

EOS = SPECIAL_IDS.eos
SENTENCE = [6, 4, 8]  # the toy GPT's one sentence (ids of tests/helpers/searches.py's 9-token vocabulary)


def _gpt(context: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(d_model=16, num_layers=2, num_heads=2, dropout=0.0, context=context), V).eval()


def gpt_logprob(model: GPT, tokens: list[int], eos: bool) -> float:
    """log p(tokens (, eos) | eos) by one full forward, in float64."""
    seq = [EOS, *tokens, *([EOS] if eos else [])]
    with torch.no_grad():
        logp = model(torch.tensor([seq[:-1]])).double().log_softmax(-1)[0]
    return float(logp.gather(1, torch.tensor(seq[1:])[:, None]).sum()) if len(seq) > 1 else 0.0


@pytest.fixture(scope="module")
def sentence_gpt() -> GPT:
    """A GPT that has learnt one sentence by heart: eos, SENTENCE, eos, SENTENCE, ..."""
    model = _gpt(seed=1).train()
    stream = torch.tensor(([EOS] + SENTENCE) * 8 + [EOS])
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(stream[None, :-1])[0], stream[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()



def test_scores_equal_the_full_forward_for_mixed_lengths() -> None:
    model, g = _gpt(context=8), torch.Generator().manual_seed(0)
    scorer = GPTScorer(model)
    tokens = torch.randint(3, V, (6,), generator=g).tolist()
    state, states = scorer.init_state(1), []
    for t in tokens:
        _, state = scorer.score(state)
        states.append(state)
        state = scorer.extend(state, torch.tensor([0]), torch.tensor([t]))
    with torch.no_grad():
        full = model(torch.tensor([[EOS] + tokens])).log_softmax(-1)[0]
    mixed = stack_states([states[4], states[0], states[2]])  # prefixes of 4, 0 and 2 tokens in one batch
    scores, _ = scorer.score(mixed)
    torch.testing.assert_close(scores, full[[4, 0, 2]], atol=1e-5, rtol=0)
    again, _ = scorer.score(mixed)  # scoring a scored state again gives the same scores
    assert torch.equal(again, scores)
    longer = scorer.extend(mixed, torch.tensor([0, 1, 2, 2]), torch.tensor([tokens[4], tokens[0], tokens[2], 5]))
    scores, _ = scorer.score(longer)
    torch.testing.assert_close(scores[:3], full[[5, 1, 3]], atol=1e-5, rtol=0)
    with torch.no_grad():
        other = model(torch.tensor([[EOS, *tokens[:2], 5]])).log_softmax(-1)[0, -1]
    torch.testing.assert_close(scores[3], other, atol=1e-5, rtol=0)
    assert float(scorer.final_score(longer)[0]) == pytest.approx(float(full[5, EOS]), abs=1e-5)


def test_past_the_context_the_oldest_tokens_drop_out() -> None:
    """With context 4 a step sees the last 3 tokens read and the new one: within the window the scores are the full
    forward's; the state's shape never grows."""
    model = _gpt(context=4)
    scorer = GPTScorer(model)
    tokens = [3, 4, 5, 6, 7, 8, 3, 4]
    state = scorer.init_state(2)
    for t in tokens:
        scores, state = scorer.score(state)
        assert state["path"].shape == (2, 3) and bool(torch.isfinite(scores).all())
        state = scorer.extend(state, torch.tensor([0, 1]), torch.tensor([t, t]))
    with torch.no_grad():  # the first 4 positions are inside the window
        full = model(torch.tensor([[EOS] + tokens[:3]])).log_softmax(-1)[0, -1]
    state = scorer.init_state(1)
    for t in tokens[:3]:
        state = scorer.extend(scorer.score(state)[1], torch.tensor([0]), torch.tensor([t]))
    torch.testing.assert_close(scorer.score(state)[0][0], full, atol=1e-5, rtol=0)


def test_weight_zero_changes_nothing(search) -> None:
    scorer = GPTScorer(_gpt())
    calls = []
    read = scorer._read
    scorer._read = lambda state: calls.append(1) or read(state)
    before = search.run(search.base)
    after = search.run(with_scorers(search.base, WeightedScorer("lm", scorer, 0.0)))
    assert [summary(h) for h in after] == [summary(h) for h in before]
    assert not calls


def test_the_lm_part_is_the_gpts_own_log_probability(search) -> None:
    model, weight, bonus = _gpt(seed=3), 0.6, 0.2
    hyps = search.run(with_scorers(search.base, WeightedScorer("lm", GPTScorer(model), weight), length_bonus=bonus))
    assert any(h.tokens for best in hyps for h in best.nbest or [best])
    for best in hyps:
        for hyp in best.nbest or [best]:
            # the frame-synchronous searches add log p(eos | output) when they rank their final beam
            assert hyp.scores["lm"] == pytest.approx(gpt_logprob(model, hyp.tokens, eos=True), abs=1e-4)
            acoustic = sum(w * hyp.scores[name] for name, w in search.parts.items())
            assert hyp.score == pytest.approx(acoustic + weight * hyp.scores["lm"] + bonus * len(hyp.tokens), abs=1e-4)


def test_a_gpt_that_knows_one_sentence_makes_the_search_output_it(search, sentence_gpt) -> None:
    assert gpt_logprob(sentence_gpt, SENTENCE, eos=True) > -0.5  # it has learnt the sentence
    before = search.run(search.base)
    assert all(h.tokens != SENTENCE for h in before)
    after = search.run(with_scorers(search.base, WeightedScorer("lm", GPTScorer(sentence_gpt), 8.0)))
    assert [h.tokens for h in after] == [SENTENCE] * len(after), [h.tokens for h in after]


def test_rescoring_ranks_by_the_combined_score() -> None:
    model, weight = _gpt(seed=4), 0.9
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 14, V, generator=g).mul(2.0)
    logits[..., EOS] = -50.0
    first = ctc_prefix_beam_search(logits.log_softmax(-1), torch.tensor([14, 10]), beam_size=8, nbest=8)
    again = lm_rescore([h.nbest for h in first], [WeightedScorer("lm", GPTScorer(model), weight)])
    changed = False
    for old, new in zip(first, again):
        expect = {tuple(h.tokens): h.score + weight * gpt_logprob(model, h.tokens, eos=True) for h in old.nbest}
        assert [tuple(h.tokens) for h in new.nbest] == sorted(expect, key=expect.get, reverse=True)
        assert [h.score for h in new.nbest] == pytest.approx([expect[tuple(h.tokens)] for h in new.nbest], abs=1e-4)
        changed |= [h.tokens for h in new.nbest] != [h.tokens for h in old.nbest]
    assert changed  # the GPT changed an order


# ---- --lm: an ARPA file or a GPT folder ------------------------------------------------------------------------
CHARS = [*SPECIALS, WORD, "a", "b", "c", "d", "e"]


def _gpt_folder(path, tokenizer, vocab: int):
    from malsori.pretrained import write_model_dir

    cfg = LMConfig(gpt=GPTConfig(d_model=16, num_layers=1, num_heads=2, dropout=0.0, context=8))
    torch.manual_seed(0)
    return write_model_dir(path, "lm", GPT(cfg.gpt, vocab), {"model": to_dict(cfg), "normalize": True}, tokenizer)


def test_lm_path_is_an_arpa_file_or_a_gpt_folder(tmp_path) -> None:
    from malsori.commands.recognize import decode_options
    from malsori.lm.ngram import NgramLM
    from malsori.lm_scorers import lm_scorers

    tok = CharTokenizer(CHARS)
    tok.save(tmp_path / "asr")
    NgramLM.train(["ab cd", "a bed"], order=2).write_arpa(tmp_path / "lm.arpa")
    gpt_dir = _gpt_folder(tmp_path / "gpt", tok, len(CHARS))
    assert isinstance(lm_scorers(tmp_path / "lm.arpa", tok, 0.5)[0].scorer, WordNgramScorer)
    fused = lm_scorers(gpt_dir, tok, 0.5, 1.0)
    assert [(s.name, s.weight) for s in fused] == [("lm", 0.5), ("words", 1.0)] and isinstance(fused[0].scorer, GPTScorer)
    flags = dict(lm_path=gpt_dir, lm_weight=0.3, word_bonus=0.0, no_lm_lookahead=False, unk_logprob=None,
                 hotwords=None, hotwords_score=1.5)
    assert isinstance(decode_options(tmp_path / "asr", "beam", 4, lm_rescore=True, **flags).rescorers[0].scorer, GPTScorer)
    with pytest.raises(MalsoriError, match="ARPA"):
        lm_scorers(gpt_dir, tok, 0.5, lookahead=False)
    other = CharTokenizer([*SPECIALS, WORD, "x", "y", "z", "a", "b"])  # same size, other units
    with pytest.raises(MalsoriError, match="units differ"):
        lm_scorers(_gpt_folder(tmp_path / "gpt2", other, len(CHARS)), tok, 0.5)
    with pytest.raises(MalsoriError, match="no such file"):
        decode_options(tmp_path / "asr", "beam", 4, lm_rescore=False, **{**flags, "lm_path": tmp_path / "none"})


def test_gpt_fusion_from_the_command_line(tmp_path) -> None:
    """`malsori transcribe en-small REC --lm FOLDER`: a GPT in en-small's units is fused, end to end (exit 0)."""
    from click.testing import CliRunner

    from malsori.cli import main
    from malsori.pretrained import resolve_model
    from malsori.tokenizer import load_tokenizer

    released = resolve_model("en-small")
    recordings = sorted((released.parents[1] / "demo" / "audio").glob("*.ogg"))
    if not recordings:
        pytest.skip("no demo recording")
    gpt_dir = _gpt_folder(tmp_path / "gpt", load_tokenizer(released), load_tokenizer(released).vocab_size)
    result = CliRunner().invoke(main, ["transcribe", "en-small", str(recordings[0]), "--method", "beam", "--beam", "2",
                                       "--lm", str(gpt_dir), "--lm-weight", "0.3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_one_pass_rescoring_equals_the_step_by_step_scores() -> None:
    """`GPTScorer.sequence_logprobs` (one forward) = the scorer protocol step by step; too long → the step path."""
    from malsori.decode.rescore import sequence_logprobs

    model, g = _gpt(context=12, seed=5), torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, V, (k,), generator=g).tolist() for k in (0, 3, 7, 10)]
    scorer = GPTScorer(model)
    fast = scorer.sequence_logprobs(seqs, EOS)
    scorer.sequence_logprobs = lambda sequences, eos: None  # force the step-by-step path
    torch.testing.assert_close(fast, sequence_logprobs(scorer, seqs), atol=1e-4, rtol=0)
    assert fast.tolist() == pytest.approx([gpt_logprob(model, y, eos=True) for y in seqs], abs=1e-4)
    assert GPTScorer(model).sequence_logprobs(seqs + [[3] * 12], EOS) is None
