"""Internal LM estimation (malsori/decode/ilm.py, `DecodeOptions.ilm_weight`) in the transducer and attention
searches: μ = 0 is plain fusion bit for bit; with μ > 0 a hypothesis' "ilm" part is the internal LM's
log-probability of its labels, recomputed on its own (transducer: joiner(0, predictor); attention: the decoder
teacher-forced over an all-zero memory, eos included), and the total is acoustic + λ · lm − μ · ilm + bonus; the
models that have no internal LM, or searches that do not use it, refuse μ > 0."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.helpers.searches import (SEARCHES, V, attention_model, ctc_model, summary, toy_feats, transducer_model,
                                     with_scorers)

from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import WeightedScorer
from malsori.errors import ConfigError
from malsori.tokenizer import SPECIAL_IDS

ILM_SEARCHES = ["attention_beam", "joint_ctc_attention_beam", "transducer_beam", "transducer_modified_beam",
                "attention_greedy", "mocha_streaming", "streaming_transducer"]


@pytest.fixture(params=ILM_SEARCHES, scope="module")
def search(request, toys):
    return request.param, SEARCHES[request.param](toys)


def transducer_ilm(model, tokens: list[int]) -> float:
    """Σ log p_ILM(label | previous labels): joiner.out(tanh(pred_proj(predictor))) over the labels (blank out)."""
    state, total, prev = model.predictor.init_state(1), 0.0, SPECIAL_IDS.blank
    with torch.no_grad():
        for tok in tokens:
            out, state = model.predictor.step(torch.tensor([prev]), state)
            logits = model.joiner.out(torch.tanh(model.joiner.pred_proj(out)))[0].double()
            logits[SPECIAL_IDS.blank] = float("-inf")
            total += float(logits.log_softmax(-1)[tok])
            prev = tok
    return total


def decoder_ilm(model, tokens: list[int]) -> float:
    """log p(tokens, eos) of the attention decoder teacher-forced over one all-zero memory frame."""
    ys = torch.tensor([[SPECIAL_IDS.sos, *tokens]])
    memory = torch.zeros(1, 1, model.encoder.output_dim)
    with torch.no_grad():
        logp = model.decoder(memory, torch.tensor([1]), ys, torch.tensor([ys.size(1)])).double().log_softmax(-1)[0]
    return float(logp.gather(1, torch.tensor([*tokens, SPECIAL_IDS.eos])[:, None]).sum())


def test_weight_zero_is_plain_fusion_bit_for_bit(search, toys) -> None:
    _, s = search
    lm = WeightedScorer("lm", toys.bigram.random(V, SPECIAL_IDS.sos, seed=5), 0.5)
    plain = s.run(with_scorers(s.base, lm))
    zero = s.run(with_scorers(s.base, lm, ilm_weight=0.0))
    assert [summary(h) for h in zero] == [summary(h) for h in plain]
    assert all("ilm" not in h.scores for h in zero)


def test_the_ilm_part_is_subtracted(search, toys) -> None:
    name, s = search
    lm, weight, mu, bonus = toys.bigram.random(V, SPECIAL_IDS.sos, seed=6), 0.5, 0.3, 0.2
    hyps = s.run(with_scorers(s.base, WeightedScorer("lm", lm, weight), ilm_weight=mu, length_bonus=bonus))
    plain = s.run(with_scorers(s.base, WeightedScorer("lm", lm, weight), length_bonus=bonus))
    model = transducer_model(toys) if "transducer" in name else attention_model(toys, 0.3 if name.startswith("joint") else 0.0)
    assert any(h.tokens for h in hyps)
    for best in hyps:
        for hyp in best.nbest or [best]:
            eos = SPECIAL_IDS.eos if s.label_sync else None
            if "transducer" in name:
                assert hyp.scores["ilm"] == pytest.approx(transducer_ilm(model, hyp.tokens), abs=1e-4)
            elif name != "mocha_streaming":  # (MoChA's teacher-forced training pass attends softly, its search hard)
                assert hyp.scores["ilm"] == pytest.approx(decoder_ilm(model, hyp.tokens), abs=1e-4)
            assert hyp.scores["ilm"] < 0 or not (hyp.tokens or s.label_sync)
            total = sum(w * hyp.scores[n] for n, w in s.parts.items())
            total += weight * lm.logprob(hyp.tokens, eos) - mu * hyp.scores["ilm"] + bonus * len(hyp.tokens)
            assert hyp.score == pytest.approx(total, abs=1e-4)
    assert [summary(h) for h in hyps] != [summary(h) for h in plain]


def test_models_and_searches_without_an_internal_lm_refuse_it(toys) -> None:
    feats, lens = toy_feats(4, [10, 7])
    cases = [(ctc_model(toys), "beam"), (transducer_model(toys), "greedy"), (attention_model(toys, 0.3), "ctc_beam"),
             (attention_model(toys, 0.3), "rescore")]
    for model, method in cases:
        with pytest.raises(ConfigError, match="ilm_weight"):
            model.decode(feats, lens, DecodeOptions(method, ilm_weight=0.5))
    lm = WeightedScorer("ilm", toys.constant(-1.0, V, SPECIAL_IDS.eos), 0.5)  # the name "ilm" is taken while μ > 0
    with pytest.raises(ConfigError, match="taken"):
        transducer_model(toys).decode(feats, lens, DecodeOptions("beam", scorers=(lm,), ilm_weight=0.5))
    with pytest.raises(ConfigError, match="ilm_weight"):
        DecodeOptions("beam", ilm_weight=-1.0)
    assert dataclasses.replace(DecodeOptions("beam"), ilm_weight=0.0) == DecodeOptions("beam")
