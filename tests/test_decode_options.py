"""DecodeOptions: ranges checked at construction with one-line errors naming the field; each model refuses the settings
its searches do not use; the prompt conditions the label-side models; Recognizer and streams take the options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import WeightedScorer
from malsori.errors import ConfigError
from malsori.features import Fbank, FbankConfig, GlobalCMVN
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.models.ctc import CTCModel
from malsori.models.registry import ModelConfig, build_model
from malsori.models.transducer import PredictorConfig, TransducerConfig, TransducerModel
from malsori.nn.chunked import ChunkConfig
from malsori.nn.conformer import ConformerConfig
from malsori.pretrained import Recognizer
from malsori.streaming import StreamConfig
from malsori.tokenizer import SPECIAL_IDS, train_tokenizer

V, F_DIM, D = 9, 6, 16
EOS = SPECIAL_IDS.eos


@pytest.mark.parametrize("field,kwargs", [
    ("beam_size", dict(beam_size=0)), ("nbest", dict(nbest=0)), ("ctc_weight", dict(ctc_weight=1.5)),
    ("max_len_ratio", dict(max_len_ratio=0.0)), ("max_len", dict(max_len=0)),
    ("max_len", dict(max_len=4, max_len_ratio=1.0)), ("length_bonus", dict(length_bonus=float("nan"))),
    ("prompt", dict(prompt=(3, -1))), ("decode method", dict(method="")),
])
def test_out_of_range_values_are_one_line_errors_naming_the_field(field: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as err:
        DecodeOptions(**kwargs)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_extra_scorer_names_must_be_distinct_and_not_built_in(toys) -> None:
    lm = toys.bigram.random(V, SPECIAL_IDS.sos, seed=0)
    for names in (["ctc"], ["att"], ["lm", "lm"]):
        with pytest.raises(ConfigError, match="^scorers: name"):
            DecodeOptions(scorers=tuple(WeightedScorer(n, lm, 0.5) for n in names))
    with pytest.raises(ConfigError, match="^scorers: weight"):
        DecodeOptions(scorers=(WeightedScorer("lm", lm, float("inf")),))
    options = DecodeOptions(scorers=[WeightedScorer("lm", lm, 0.5)], prompt=[3, 4])  # lists become tuples
    assert options.scorers == (WeightedScorer("lm", lm, 0.5),) and options.prompt == (3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.beam_size = 3


def models(toys) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    att = AttentionConfig(d_model=D, num_heads=2, num_layers=1, dropout=0.0, attention_dropout=0.0, ctc_weight=0.3)
    mocha = dataclasses.replace(att, decoder="las", las_attention="mocha", hidden_size=D, embed_dim=8, attention_dim=8)
    pred = PredictorConfig(kind="stateless", embed_dim=12, dropout=0.0)
    return {"ctc": CTCModel(toys.encoder(F_DIM, D), V).eval(),
            "attention": AttentionModel(toys.encoder(F_DIM, D), V, att).eval(),
            "mocha": AttentionModel(toys.encoder(F_DIM, D), V, mocha).eval(),
            "transducer": TransducerModel(toys.encoder(F_DIM, D), V, TransducerConfig(predictor=pred, joiner_dim=16)).eval()}


@pytest.mark.parametrize("model,options,field", [
    ("ctc", DecodeOptions("beam", ctc_weight=0.5), "ctc_weight"),
    ("ctc", DecodeOptions("beam", max_len=4), "max_len"),
    ("ctc", DecodeOptions("greedy", length_bonus=1.0), "length_bonus"),
    ("ctc", DecodeOptions("beam", prompt=(3,)), "prompt"),  # no extra scorer would read it
    ("ctc", DecodeOptions("modified_beam"), "decode method"),
    ("transducer", DecodeOptions("beam", max_len_ratio=2.0), "max_len_ratio"),
    ("transducer", DecodeOptions("greedy", length_bonus=0.5), "length_bonus"),
    ("transducer", DecodeOptions("greedy", prompt=(V,)), "prompt"),  # outside the vocabulary
    ("attention", DecodeOptions("ctc_greedy", max_len=3), "max_len"),
    ("attention", DecodeOptions("rescore", length_bonus=1.0), "length_bonus"),
    ("attention", DecodeOptions("greedy", ctc_weight=0.5), "ctc_weight"),
    ("mocha", DecodeOptions("greedy", prompt=(3,)), "prompt"),
])
def test_models_refuse_what_their_searches_do_not_use(toys, model: str, options: DecodeOptions, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        models(toys)[model].decode(torch.randn(1, 5, F_DIM), torch.tensor([5]), options)
    assert str(err.value).startswith(field)


def test_greedy_ctc_and_transducer_take_no_extra_scorers(toys) -> None:
    lm = WeightedScorer("lm", toys.bigram.random(V, SPECIAL_IDS.sos, seed=1), 0.5)
    built = models(toys)
    for name in ("ctc", "transducer"):
        with pytest.raises(ConfigError, match="^scorers"):
            built[name].decode(torch.randn(1, 5, F_DIM), torch.tensor([5]), DecodeOptions("greedy", scorers=(lm,)))


def test_the_prompt_conditions_the_decoder_and_the_extra_scorers(toys) -> None:
    """Attention greedy with a prompt = the decoder teacher-forced on sos + prompt + output; the extra scorer's part
    starts from the prompt's last token. The prompt is not part of the output."""
    model = models(toys)["attention"]
    lm = toys.bigram.random(V, SPECIAL_IDS.sos, seed=2)
    feats, lens = torch.randn(2, 8, F_DIM, generator=torch.Generator().manual_seed(3)), torch.tensor([8, 6])
    prompt = (5, 7)
    options = DecodeOptions("greedy", max_len=4, prompt=prompt, scorers=(WeightedScorer("lm", lm, 0.5),))
    with torch.no_grad():
        hyps = model.decode(feats, lens, options)
        enc, enc_lens = model.encoder(feats, lens)
        for b, hyp in enumerate(hyps):
            ys = torch.tensor([[SPECIAL_IDS.sos, *prompt, *hyp.tokens]])
            logp = model.decoder(enc[b : b + 1], enc_lens[b : b + 1], ys, torch.tensor([ys.size(1)])).log_softmax(-1)
            targets = torch.tensor(hyp.tokens + [EOS])
            att = float(logp[0, len(prompt) :].gather(1, targets[:, None]).sum())
            assert hyp.scores["att"] == pytest.approx(att, abs=1e-4)
            assert hyp.scores["lm"] == pytest.approx(type(lm)(lm.log_probs, prompt[-1]).logprob(hyp.tokens, EOS), abs=1e-4)


def test_the_prompt_conditions_the_prediction_network(toys) -> None:
    """One frame where blank wins: the greedy score is log p(blank) given the predictor fed blank, then the prompt."""
    model = models(toys)["transducer"]
    with torch.no_grad():
        model.joiner.out.bias[SPECIAL_IDS.blank] += 3.0
    feats, lens = torch.randn(1, 1, F_DIM, generator=torch.Generator().manual_seed(4)), torch.tensor([1])

    def blank_log_prob(context: list[int]) -> float:
        state = model.predictor.init_state(1)
        for token in [SPECIAL_IDS.blank, *context]:
            out, state = model.predictor.step(torch.tensor([token]), state)
        logits = model.joiner(model.joiner.enc_proj(model.encoder(feats, lens)[0][:, 0]), model.joiner.pred_proj(out))
        return float(logits.log_softmax(-1)[0, SPECIAL_IDS.blank])

    with torch.no_grad():
        for prompt in ((), (4, 6)):
            hyp = model.decode(feats, lens, DecodeOptions("greedy", prompt=prompt))[0]
            assert hyp.tokens == [] and hyp.score == pytest.approx(blank_log_prob(list(prompt)), abs=1e-5)
        assert blank_log_prob([4, 6]) != pytest.approx(blank_log_prob([]), abs=1e-3)  # the prompt mattered


def _recognizer(head: str) -> Recognizer:
    torch.manual_seed(0)
    tokenizer = train_tokenizer("char", ["hello world", "decode options"])
    conformer = ConformerConfig(d_model=32, num_layers=1, num_heads=2, conv_kernel=7, dropout=0.0, subsampling_channels=8,
                                chunk=ChunkConfig(causal=True))
    cfg = ModelConfig(encoder="conformer", conformer=conformer, head=head)
    cfg.transducer.predictor.embed_dim = cfg.transducer.predictor.hidden_size = cfg.transducer.joiner_dim = 16
    fbank = Fbank(FbankConfig())
    return Recognizer(build_model(cfg, fbank.dim, tokenizer.vocab_size), tokenizer, fbank, GlobalCMVN(fbank.dim), "cpu")


@pytest.mark.parametrize("head", ["ctc", "transducer"])
def test_recognizer_and_stream_take_the_options(toys, head: str) -> None:
    rec = _recognizer(head)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    lm = WeightedScorer("lm", toys.bigram.random(rec.tokenizer.vocab_size, SPECIAL_IDS.sos, seed=5), 0.3)
    options = DecodeOptions("beam", beam_size=3, scorers=(lm,), length_bonus=0.5)
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        direct = rec.model.decode(rec.cmvn(feats, lens), lens, options)[0]
    assert rec.transcribe(wave, options).tokens == direct.tokens
    assert rec.transcribe(wave).tokens == rec.transcribe(wave, DecodeOptions()).tokens
    stream = rec.stream(StreamConfig(chunk_ms=320, decode=options))
    stream.accept_waveform(wave)
    stream.finish()
    with pytest.raises(ConfigError, match="^stream method"):
        rec.stream(StreamConfig(decode=DecodeOptions("rescore")))
