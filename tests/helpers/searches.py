"""The toy models and searches every scorer test runs (tests/test_scorers.py, test_lm_fusion.py, test_lm_gpt.py,
test_lm_ilme.py, test_hotwords.py, test_lm_frozen_encoder.py): CTC, attention and transducer models over the toy
encoders of conftest.py, made peaky so searches have something to choose between, and each search as a `Search`."""

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


def toy_feats(seed: int, lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lens), max(lens), F_DIM, generator=g), torch.tensor(lens)


def attention_model(toys, ctc_weight: float, **cfg) -> AttentionModel:
    torch.manual_seed(1)
    config = AttentionConfig(d_model=D, num_heads=2, num_layers=2, dropout=0.0, attention_dropout=0.0, hidden_size=D,
                             embed_dim=8, attention_dim=8, ctc_weight=ctc_weight, decode_ctc_weight=ctc_weight, **cfg)
    model = AttentionModel(toys.encoder(F_DIM, D), V, config)
    return _sharpen(model, 2.0, [model.ctc.bias] if model.ctc is not None else [])


def transducer_model(toys) -> TransducerModel:
    torch.manual_seed(2)
    cfg = TransducerConfig(predictor=PredictorConfig(kind="lstm", embed_dim=12, hidden_size=12, dropout=0.0), joiner_dim=16)
    model = TransducerModel(toys.encoder(F_DIM, D), V, cfg)
    _sharpen(model, 1.5, [model.joiner.out.bias])
    with torch.no_grad():
        model.joiner.out.bias[SPECIAL_IDS.blank] -= 1.0  # labels on many frames
    return model


def ctc_model(toys) -> CTCModel:
    torch.manual_seed(3)
    model = CTCModel(toys.encoder(F_DIM, D), V)
    return _sharpen(model, 2.0, [model.head.bias])


def _offline(model, lens: list[int]) -> Callable[[DecodeOptions], list[Hypothesis]]:
    feats, feat_lens = toy_feats(4, lens)
    return lambda options: model.decode(feats, feat_lens, options)


def _streamed(model, frames: int, piece: int = 3) -> Callable[[DecodeOptions], list[Hypothesis]]:
    """The incremental search of `malsori.streaming` fed the encoder output in pieces (one utterance)."""
    feats, lens = toy_feats(5, [frames])

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
    return attention_model(toys, 0.0, decoder="las", las_attention="mocha", mocha_init_bias=0.0, max_len_ratio=1.0)


def _transformer_mocha(toys) -> AttentionModel:
    return attention_model(toys, 0.0, transformer_cross="mocha", mocha_init_bias=0.0, max_len_ratio=1.0)


SEARCHES = {
    "ctc_prefix_beam": lambda toys: Search(_offline(ctc_model(toys), [14, 9]), DecodeOptions("beam", beam_size=V, nbest=3),
                                           {"ctc": 1.0}, False, False),
    "attention_beam": lambda toys: Search(_offline(attention_model(toys, 0.0), [10, 7]),
                                          DecodeOptions("beam", beam_size=4, nbest=3, max_len=5), {"att": 1.0}, True, False),
    "joint_ctc_attention_beam": lambda toys: Search(_offline(attention_model(toys, 0.3), [10, 7]),
                                                    DecodeOptions("beam", beam_size=4, nbest=3, max_len=5),
                                                    {"att": 0.7, "ctc": 0.3}, True, False),
    "transducer_beam": lambda toys: Search(_offline(transducer_model(toys), [6, 4]), DecodeOptions("beam", beam_size=4, nbest=3),
                                           {"transducer": 1.0}, False, False),
    "transducer_modified_beam": lambda toys: Search(_offline(transducer_model(toys), [7, 5]),
                                                    DecodeOptions("modified_beam", beam_size=4, nbest=3),
                                                    {"transducer": 1.0}, False, False),
    "attention_greedy": lambda toys: Search(_offline(attention_model(toys, 0.0), [10, 7]), DecodeOptions("greedy", max_len=5),
                                            {"att": 1.0}, True, True),
    "attention_ctc_beam": lambda toys: Search(_offline(attention_model(toys, 0.3), [14, 9]),
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
    "streaming_ctc": lambda toys: Search(_streamed(ctc_model(toys), 14), DecodeOptions("beam", beam_size=V), {"ctc": 1.0},
                                         False, False),
    "streaming_transducer": lambda toys: Search(_streamed(transducer_model(toys), 7), DecodeOptions("beam", beam_size=4),
                                                {"transducer": 1.0}, False, False),
}



def with_scorers(options: DecodeOptions, *scorers: WeightedScorer, **changes) -> DecodeOptions:
    return dataclasses.replace(options, scorers=scorers, **changes)


def summary(hyp: Hypothesis) -> tuple:
    """Everything a hypothesis reports, its n-best included (a Hypothesis lists itself, so `==` would recurse)."""
    own = lambda h: (h.tokens, h.score, h.token_frames, h.scores)  # noqa: E731
    return own(hyp), [own(h) for h in hyp.nbest]
