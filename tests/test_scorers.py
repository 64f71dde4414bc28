"""Extra scorers in every search: CTC prefix beam (of a CTC model and of an attention model's CTC head), attention
beam, joint CTC/attention beam, transducer beam and modified beam, attention greedy, MoChA beam (LAS and Transformer
decoders), MoChA streaming (LAS and Transformer), streaming CTC and transducer. For each, with toy scorers written
in the tests (conftest.py): a scorer that rewards one token makes it appear; at weight 0 nothing changes (bit for
bit, and the scorer is never run); a constant scorer at weight 1 leaves the n-best order unchanged; the reported
total is the weighted sum of each part, the extra scorers' parts recomputed on their own."""

from __future__ import annotations

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import WeightedScorer
from malsori.tokenizer import SPECIAL_IDS
from tests.helpers.searches import EOS, LABELS, V, Search, attention_model, summary, toy_feats, with_scorers

def test_a_scorer_that_rewards_a_token_makes_it_appear(search: Search, toys) -> None:
    before = search.run(search.base)
    seen = {t for hyp in before for t in hyp.tokens}
    token = next(t for t in LABELS if t not in seen)  # the search never chose it on its own
    reward = toys.bigram.rewarding(V, token, start=SPECIAL_IDS.sos, eos=EOS)
    after = search.run(with_scorers(search.base, WeightedScorer("reward", reward, 1.0)))
    assert any(hyp.tokens for hyp in before)
    for old, new in zip(before, after):  # every output with labels (a scorer cannot outweigh blank in CTC / RNN-T)
        assert token in new.tokens or not old.tokens, ([h.tokens for h in before], [h.tokens for h in after], token)
    assert reward.calls > 0


def test_weight_zero_changes_nothing(search: Search, toys) -> None:
    scorer = toys.bigram.random(V, SPECIAL_IDS.sos, seed=7)
    before = search.run(search.base)
    after = search.run(with_scorers(search.base, WeightedScorer("lm", scorer, 0.0)))
    assert [summary(h) for h in after] == [summary(h) for h in before]
    assert scorer.calls == 0  # weight 0 = off: not run at all


def test_a_constant_scorer_leaves_the_nbest_order_unchanged(search: Search, toys) -> None:
    """The same log-probability c for every label (eos 0) is a length penalty, offset exactly by a length bonus of
    −c when both are applied at the same moments, once per label: then nothing may change but rounding."""
    c = -0.5
    before = search.run(search.base)
    after = search.run(with_scorers(search.base, WeightedScorer("constant", toys.constant(c, V, EOS), 1.0), length_bonus=-c))
    for old, new in zip(before, after):
        old_list, new_list = old.nbest or [old], new.nbest or [new]
        assert [h.tokens for h in new_list] == [h.tokens for h in old_list]
        assert [h.token_frames for h in new_list] == [h.token_frames for h in old_list]
        assert [h.score for h in new_list] == pytest.approx([h.score for h in old_list], abs=1e-4)
        assert [h.scores["constant"] for h in new_list] == pytest.approx([c * len(h.tokens) for h in old_list])


def test_totals_are_the_weighted_sum_of_the_parts(search: Search, toys) -> None:
    lm, const = toys.bigram.random(V, SPECIAL_IDS.sos, seed=11), toys.constant(-0.25, V, EOS)
    weights, bonus = {"lm": 0.4, "const": 0.6}, 0.3
    options = with_scorers(search.base, WeightedScorer("lm", lm, weights["lm"]),
                           WeightedScorer("const", const, weights["const"]), length_bonus=bonus)
    hyps = search.run(options)
    assert any(hyp.tokens for hyp in hyps)
    for best in hyps:
        for hyp in best.nbest or [best]:
            eos = EOS if search.label_sync else None
            extra = {"lm": lm.logprob(hyp.tokens, eos), "const": const.logprob(hyp.tokens, eos)}
            assert set(hyp.scores) == set(search.parts) | set(extra)
            for name, value in extra.items():
                assert hyp.scores[name] == pytest.approx(value, abs=1e-4), name
            total = sum(w * hyp.scores[name] for name, w in search.parts.items())
            total += sum(weights[name] * value for name, value in extra.items()) + bonus * len(hyp.tokens)
            assert hyp.score == pytest.approx(total, abs=1e-4)


def test_the_attention_part_is_the_decoders_own_log_probability(toys) -> None:
    """Recomputed by teacher forcing, for the attention searches with extra scorers: the decoder's part is untouched."""
    model = attention_model(toys, 0.3)
    feats, lens = toy_feats(4, [10, 7])
    lm = toys.bigram.random(V, SPECIAL_IDS.sos, seed=3)
    for method in ("greedy", "beam"):
        options = DecodeOptions(method, beam_size=3, nbest=3, max_len=5, scorers=(WeightedScorer("lm", lm, 0.5),))
        with torch.no_grad():
            hyps = model.decode(feats, lens, options)
            enc, enc_lens = model.encoder(feats, lens)
            for b, best in enumerate(hyps):
                for hyp in best.nbest or [best]:
                    ys = torch.tensor([[SPECIAL_IDS.sos] + hyp.tokens])
                    logp = model.decoder(enc[b : b + 1], enc_lens[b : b + 1], ys, torch.tensor([ys.size(1)])).log_softmax(-1)
                    att = float(logp[0].gather(1, torch.tensor(hyp.tokens + [EOS])[:, None]).sum())
                    assert hyp.scores["att"] == pytest.approx(att, abs=1e-4), method
