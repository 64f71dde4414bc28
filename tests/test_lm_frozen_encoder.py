"""experiments/lm/frozen_encoder.py: decoding from cached encoder outputs (how the transducer / attention LM rows of
docs/lm/gpt_fusion.md were measured) gives exactly the model's own decoding of the features, with an LM fused and
ILME on, and leaves the model's encoder in place."""

from __future__ import annotations

import pytest
import torch
from tests.helpers.searches import V, attention_model, toy_feats, transducer_model

from experiments.lm.frozen_encoder import decode_encoded
from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import WeightedScorer
from malsori.tokenizer import SPECIAL_IDS


@pytest.mark.parametrize("family", ["transducer", "attention"])
def test_decoding_cached_outputs_equals_decoding_features(family, toys) -> None:
    model = (transducer_model(toys) if family == "transducer" else attention_model(toys, 0.3)).eval()
    encoder = model.encoder
    lm = WeightedScorer("lm", toys.bigram.random(V, SPECIAL_IDS.sos, seed=5), 0.5)
    options = DecodeOptions(method="modified_beam" if family == "transducer" else "beam", beam_size=3,
                            scorers=(lm,), ilm_weight=0.2)
    feats, lens = toy_feats(3, [9, 6])
    with torch.no_grad():
        enc, enc_lens = model.encoder(feats, lens)
    cached = decode_encoded(model, [enc[i, : enc_lens[i]] for i in range(2)], options)
    direct = [model.decode(feats[i : i + 1, : lens[i]], lens[i : i + 1], options)[0] for i in range(2)]
    assert all(h.tokens for h in direct)
    assert [h.tokens for h in cached] == [h.tokens for h in direct]
    assert [h.score for h in cached] == pytest.approx([h.score for h in direct], abs=1e-5)
    assert model.encoder is encoder
