"""Extra scorers in every search: CTC prefix beam (of a CTC model and of an attention model's CTC head), attention
beam, joint CTC/attention beam, transducer beam and modified beam, attention greedy, MoChA beam (LAS and Transformer
decoders), MoChA streaming (LAS and Transformer), streaming CTC and transducer. For each, with toy scorers written
in the tests (conftest.py): a scorer that rewards one token makes it appear; at weight 0 nothing changes (bit for
bit, and the scorer is never run); a constant scorer at weight 1 leaves the n-best order unchanged; the reported
total is the weighted sum of each part, the extra scorers' parts recomputed on their own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import WeightedScorer
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.models.ctc import CTCModel
from malsori.models.transducer import PredictorConfig, TransducerConfig, TransducerModel
from malsori.streaming import make_search
from malsori.tokenizer import SPECIAL_IDS

V, F_DIM, D = 9, 6, 16
EOS = SPECIAL_IDS.eos
LABELS = [t for t in range(V) if t not in (SPECIAL_IDS.blank, SPECIAL_IDS.unk, SPECIAL_IDS.eos)]


@dataclass
class Search:
    """One search under test: how to run it, how its total is made."""

    run: Callable[[DecodeOptions], list[Hypothesis]]  # options → the best hypothesis per utterance
    base: DecodeOptions  # the options without extra scorers
    parts: dict[str, float]  # the search's own parts in Hypothesis.scores and their weights
    label_sync: bool  # eos is scored (attention searches) rather than only labels (CTC, transducer)
    greedy: bool  # a greedy search (one token per step), not a beam


def _sharpen(model: torch.nn.Module, scale: float, never: list[torch.Tensor]) -> torch.nn.Module:
    """A random model with peakier outputs, so that searches have something to choose between; the output biases in
    `never` rule out eos as a label (a tokenizer never emits it: CTC and transducer outputs stop with the frames)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        for bias in never:
            bias[EOS] -= 50.0
    return model.eval()


def _feats(seed: int, lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lens), max(lens), F_DIM, generator=g), torch.tensor(lens)


def _attention(toys, ctc_weight: float, **cfg) -> AttentionModel:
    torch.manual_seed(1)
    config = AttentionConfig(d_model=D, num_heads=2, num_layers=2, dropout=0.0, attention_dropout=0.0, hidden_size=D,
                             embed_dim=8, attention_dim=8, ctc_weight=ctc_weight, decode_ctc_weight=ctc_weight, **cfg)
    model = AttentionModel(toys.encoder(F_DIM, D), V, config)
    return _sharpen(model, 2.0, [model.ctc.bias] if model.ctc is not None else [])


def _transducer(toys) -> TransducerModel:
    torch.manual_seed(2)
    cfg = TransducerConfig(predictor=PredictorConfig(kind="lstm", embed_dim=12, hidden_size=12, dropout=0.0), joiner_dim=16)
    model = TransducerModel(toys.encoder(F_DIM, D), V, cfg)
    _sharpen(model, 1.5, [model.joiner.out.bias])
    with torch.no_grad():
        model.joiner.out.bias[SPECIAL_IDS.blank] -= 1.0  # labels on many frames
    return model


def _ctc(toys) -> CTCModel:
    torch.manual_seed(3)
    model = CTCModel(toys.encoder(F_DIM, D), V)
    return _sharpen(model, 2.0, [model.head.bias])


def _offline(model, lens: list[int]) -> Callable[[DecodeOptions], list[Hypothesis]]:
    feats, feat_lens = _feats(4, lens)
    return lambda options: model.decode(feats, feat_lens, options)


def _streamed(model, frames: int, piece: int = 3) -> Callable[[DecodeOptions], list[Hypothesis]]:
    """The incremental search of `malsori.streaming` fed the encoder output in pieces (one utterance)."""
    feats, lens = _feats(5, [frames])

    def run(options: DecodeOptions) -> list[Hypothesis]:
        with torch.no_grad():
            enc, _ = model.encoder(feats, lens)
            search = make_search(model, options, torch.device("cpu"))
            for start in range(0, frames, piece):
                search.advance(enc[:, start : start + piece])
            search.finish()
        return [search.best()]

    return run


def _mocha(toys) -> AttentionModel:
    return _attention(toys, 0.0, decoder="las", las_attention="mocha", mocha_init_bias=0.0, max_len_ratio=1.0)


def _transformer_mocha(toys) -> AttentionModel:
    return _attention(toys, 0.0, transformer_cross="mocha", mocha_init_bias=0.0, max_len_ratio=1.0)


SEARCHES = {
    "ctc_prefix_beam": lambda toys: Search(_offline(_ctc(toys), [14, 9]), DecodeOptions("beam", beam_size=V, nbest=3),
                                           {"ctc": 1.0}, False, False),
    "attention_beam": lambda toys: Search(_offline(_attention(toys, 0.0), [10, 7]),
                                          DecodeOptions("beam", beam_size=4, nbest=3, max_len=5), {"att": 1.0}, True, False),
    "joint_ctc_attention_beam": lambda toys: Search(_offline(_attention(toys, 0.3), [10, 7]),
                                                    DecodeOptions("beam", beam_size=4, nbest=3, max_len=5),
                                                    {"att": 0.7, "ctc": 0.3}, True, False),
    "transducer_beam": lambda toys: Search(_offline(_transducer(toys), [6, 4]), DecodeOptions("beam", beam_size=4, nbest=3),
                                           {"transducer": 1.0}, False, False),
    "transducer_modified_beam": lambda toys: Search(_offline(_transducer(toys), [7, 5]),
                                                    DecodeOptions("modified_beam", beam_size=4, nbest=3),
                                                    {"transducer": 1.0}, False, False),
    "attention_greedy": lambda toys: Search(_offline(_attention(toys, 0.0), [10, 7]), DecodeOptions("greedy", max_len=5),
                                            {"att": 1.0}, True, True),
    "attention_ctc_beam": lambda toys: Search(_offline(_attention(toys, 0.3), [14, 9]),
                                              DecodeOptions("ctc_beam", beam_size=V, nbest=3), {"ctc": 1.0}, False, False),
    "mocha_beam": lambda toys: Search(_offline(_mocha(toys), [10, 7]), DecodeOptions("beam", beam_size=4, nbest=3, max_len=5),
                                      {"att": 1.0}, True, False),
    "transformer_mocha_beam": lambda toys: Search(_offline(_transformer_mocha(toys), [10, 7]),
                                                  DecodeOptions("beam", beam_size=4, nbest=3, max_len=5), {"att": 1.0},
                                                  True, False),
    "transformer_mocha_streaming": lambda toys: Search(_streamed(_transformer_mocha(toys), 12),
                                                       DecodeOptions("greedy", max_len=5), {"att": 1.0}, True, True),
    "mocha_streaming": lambda toys: Search(_streamed(_mocha(toys), 12), DecodeOptions("greedy", max_len=5), {"att": 1.0},
                                           True, True),
    "streaming_ctc": lambda toys: Search(_streamed(_ctc(toys), 14), DecodeOptions("beam", beam_size=V), {"ctc": 1.0},
                                         False, False),
    "streaming_transducer": lambda toys: Search(_streamed(_transducer(toys), 7), DecodeOptions("beam", beam_size=4),
                                                {"transducer": 1.0}, False, False),
}


@pytest.fixture(params=list(SEARCHES), scope="module")
def search(request, toys) -> Search:
    return SEARCHES[request.param](toys)


def with_scorers(options: DecodeOptions, *scorers: WeightedScorer, **changes) -> DecodeOptions:
    return dataclasses.replace(options, scorers=scorers, **changes)


def summary(hyp: Hypothesis) -> tuple:
    """Everything a hypothesis reports, its n-best included (a Hypothesis lists itself, so `==` would recurse)."""
    own = lambda h: (h.tokens, h.score, h.token_frames, h.scores)  # noqa: E731
    return own(hyp), [own(h) for h in hyp.nbest]


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
    model = _attention(toys, 0.3)
    feats, lens = _feats(4, [10, 7])
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
