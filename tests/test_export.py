"""`malsori export --format onnx`: every exported layout gives, in onnxruntime, PyTorch's log-probs (to LOGPROB_TOL) and
greedy tokens, and in sherpa-onnx the tokens malsori's greedy search gives, on the eight demo recordings; models and
folders without a sherpa-onnx layout are refused in one line.

Fixtures: the released en-small (WeNet CTC; trained at 16-bit sample scale), en-small re-based to samples in [-1, 1]
(the scale of sherpa-onnx's other layouts), a transducer and a causal streaming CTC model fitted to the demo
recordings (tests/helpers/export.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers.export import demo_batch, rebase_scale, train_streaming_ctc, train_transducer
from malsori.cli import main
from malsori.commands.demo import RELEASED
from malsori.errors import MalsoriError
from malsori.export import export_onnx
from malsori.export.runtime import OnnxCTC, OnnxStreaming, OnnxTransducer, read_export, sherpa_recognizer, sherpa_tokens
from malsori.features import FbankConfig, GlobalCMVN
from malsori.metrics import error_rates
from malsori.models.registry import ModelConfig, build_model
from malsori.nn.conformer import ConformerConfig
from malsori.pretrained import RELEASED_MODELS, Recognizer, load_model_dir, save_model_dir
from malsori.tokenizer import train_tokenizer

pytest.importorskip("onnxruntime")
sherpa_onnx = pytest.importorskip("sherpa_onnx")
pytestmark = pytest.mark.skipif(not (RELEASED_MODELS / RELEASED / "model.safetensors").is_file(),
                                reason=f"no released model in {RELEASED_MODELS / RELEASED}")

LOGPROB_TOL = 1e-3  # max |Δ log-prob| (or encoder output) onnxruntime vs PyTorch, float32 (measured ~1e-5 on en-small)


@pytest.fixture(scope="module")
def unit_small(tmp_path_factory) -> Path:
    return rebase_scale(RELEASED, tmp_path_factory.mktemp("unit") / "en-small-unit")


@pytest.fixture(scope="module")
def released_onnx(tmp_path_factory) -> Path:
    """en-small exported (WeNet CTC only: it was trained on 16-bit sample values), with int8 copies."""
    out = tmp_path_factory.mktemp("released") / "onnx"
    export_onnx(RELEASED, out, int8=True)
    return out


@pytest.fixture(scope="module")
def unit_onnx(unit_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unit") / "onnx"
    export_onnx(unit_small, out)
    return out


@pytest.fixture(scope="module")
def waves(unit_small) -> list[np.ndarray]:
    return demo_batch(load_model_dir(unit_small))[0]


def _tokens(rec: Recognizer, symbols: list[str]) -> list[int]:
    ids = {rec.tokenizer.id_to_piece(i): i for i in range(rec.tokenizer.vocab_size)}
    return [ids[s] for s in symbols]


def _torch_ctc(rec: Recognizer, wave: np.ndarray) -> tuple[np.ndarray, int]:
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        lp, out_lens = rec.model(rec.cmvn(feats, lens), lens)
    return lp[0].numpy(), int(out_lens[0])


@pytest.mark.parametrize("which, role", [("released", "model"), ("unit", "model"), ("unit", "zipformer-ctc")])
def test_offline_ctc_onnxruntime_equals_pytorch(which, role, unit_small, released_onnx, unit_onnx, waves):
    path, folder = (RELEASED, released_onnx) if which == "released" else (unit_small, unit_onnx)
    rec = Recognizer.load(path, device="cpu")
    onnx = OnnxCTC(folder, rec.fbank.cfg, role)
    for wave in waves:
        want, n = _torch_ctc(rec, wave)
        got, lens = onnx.log_probs(wave)
        assert int(lens[0]) == n
        assert np.abs(got[0, :n] - want[:n]).max() < LOGPROB_TOL
        tokens = rec.transcribe(wave).tokens
        assert tokens and onnx.decode(wave).tokens == tokens


def test_export_writes_each_layout_the_front_end_allows(released_onnx, unit_onnx):
    """A model trained on 16-bit sample values has no exact unit-scale layout; re-based to [-1, 1] it has both."""
    released, unit = read_export(released_onnx), read_export(unit_onnx)
    assert released["graphs"] == {"model": "model.onnx"} and released["int8"] == {"model": "model.int8.onnx"}
    assert unit["graphs"] == {"model": "model.onnx", "zipformer-ctc": "zipformer-ctc.onnx"}
    assert released["vocab_size"] == 31 and released["subsampling_factor"] == 4 and released["feature_dim"] == 80
    lines = (released_onnx / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["<blank> 0", "<unk> 1"] and len(lines) == 31


def test_offline_ctc_in_sherpa_onnx_equals_malsori(unit_small, unit_onnx, waves):
    rec = Recognizer.load(unit_small, device="cpu")
    sherpa = sherpa_recognizer(unit_onnx, "zipformer-ctc")
    for wave in waves:
        want = rec.transcribe(wave).tokens
        assert want and _tokens(rec, sherpa_tokens(sherpa, wave)) == want


def test_wenet_ctc_in_sherpa_onnx_differs_only_by_its_dither(released_onnx, waves):
    """from_wenet_ctc adds random dither (std 1.0 on 16-bit samples; sherpa-onnx since Feb 2026): a few characters of
    this weak model's output flip (measured CER 1-4% between runs), no more; without the dither the same graph gives
    malsori's tokens (tests above)."""
    rec = Recognizer.load(RELEASED, device="cpu")
    sherpa = sherpa_recognizer(released_onnx, "model")
    ours = [rec.tokenizer.decode(rec.transcribe(w).tokens) for w in waves]
    theirs = [rec.tokenizer.decode(_tokens(rec, sherpa_tokens(sherpa, w))) for w in waves]
    rates = error_rates(ours, theirs)
    assert all(theirs) and rates.cer < 0.1, rates.line()


def test_int8_is_smaller_and_still_recognizes(released_onnx, waves):
    """A quarter of the size, and nearly the same output (its WER change on real speech: docs/export.md)."""
    info = read_export(released_onnx)
    fp32, int8 = ((released_onnx / info[k]["model"]).stat().st_size for k in ("graphs", "int8"))
    assert int8 < 0.35 * fp32
    rec = Recognizer.load(RELEASED, device="cpu")
    ours = [rec.tokenizer.decode(rec.transcribe(w).tokens) for w in waves]
    quantized = OnnxCTC(released_onnx, rec.fbank.cfg, "model", int8=True)
    q = [rec.tokenizer.decode(quantized.decode(w).tokens) for w in waves]
    assert all(q) and error_rates(ours, q).cer < 0.3
    sherpa8 = sherpa_recognizer(released_onnx, "model", int8=True)
    assert all(sherpa_tokens(sherpa8, w) for w in waves)


@pytest.mark.slow
def test_transducer_in_onnxruntime_and_sherpa_onnx_equals_malsori(unit_small, waves, tmp_path):
    path = train_transducer(unit_small, tmp_path / "transducer")
    out = export_onnx(path, tmp_path / "onnx")
    assert sorted(out.graphs) == ["decoder", "encoder", "joiner"] and out.context_size == 2
    rec = Recognizer.load(path, device="cpu")
    onnx = OnnxTransducer(tmp_path / "onnx", rec.fbank.cfg)
    sherpa = sherpa_recognizer(tmp_path / "onnx", "transducer")
    wave = waves[0]
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        enc, _ = rec.model.encoder(rec.cmvn(feats, lens), lens)
        want = rec.model.joiner.enc_proj(enc)[0].numpy()
    got, got_lens = onnx.encoder.run(None, {"x": onnx.features(wave), "x_lens": np.array([feats.size(1)])})
    assert int(got_lens[0]) == len(want) and np.abs(got[0, : len(want)] - want).max() < LOGPROB_TOL
    emitted = 0
    for wave in waves:
        tokens = rec.transcribe(wave).tokens  # greedy, at most one label per frame (the fixture's setting)
        emitted += len(tokens)
        assert onnx.decode(wave).tokens == tokens
        assert _tokens(rec, sherpa_tokens(sherpa, wave)) == tokens
    assert emitted > 20


def _torch_stream(rec: Recognizer, wave: np.ndarray, chunk: int, left: int, frames: int) -> np.ndarray:
    """malsori's streaming encoder over the first `frames` feature frames, chunk by chunk → CTC log-probs."""
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        enc, _ = rec.model.encoder.forward_chunk(rec.cmvn(feats, lens)[:, :frames], None, chunk, left)
        return rec.model.head(enc).float().log_softmax(-1).numpy()


@pytest.fixture(scope="module")
def streaming_ctc(unit_small, tmp_path_factory) -> Path:
    return train_streaming_ctc(unit_small, tmp_path_factory.mktemp("streaming") / "ctc")


@pytest.mark.slow
def test_streaming_ctc_in_onnxruntime_and_sherpa_onnx_equals_malsori(streaming_ctc, waves, tmp_path):
    path = streaming_ctc
    out = export_onnx(path, tmp_path / "onnx")
    assert "streaming" in out.graphs and out.streaming["num_blocks"] == 2 and out.streaming["cnn_module_kernel"] == 7
    rec = Recognizer.load(path, device="cpu")
    tail = np.zeros(8000, np.float32)  # sherpa-onnx decodes only whole chunks: half a second of silence flushes the speech
    for chunk, left in ((4, 2), (8, 3)):
        onnx = OnnxStreaming(tmp_path / "onnx", rec.fbank.cfg, chunk, left)
        sherpa = sherpa_recognizer(tmp_path / "onnx", "streaming", chunk_size=chunk, left_chunks=left)
        emitted = 0
        for wave in waves:
            padded = np.concatenate([wave, tail])
            used = onnx.chunks(onnx.features(padded))
            frames = (used - 1) * chunk * 4 + out.streaming["right_context"] + (chunk - 1) * 4 + 1 if used else 0
            want = _torch_stream(rec, padded, chunk, left, frames)
            got = np.concatenate([*onnx.outputs(padded), np.zeros_like(want[:, :0])], axis=1)
            assert got.shape == want.shape and np.abs(got - want).max() < LOGPROB_TOL
            tokens = onnx.decode(padded).tokens
            emitted += len(tokens)
            assert _tokens(rec, sherpa_tokens(sherpa, wave, tail_s=0.5)) == tokens
        assert emitted > 20, (chunk, emitted)


@pytest.mark.slow
def test_streaming_transducer_in_onnxruntime_equals_malsori(streaming_ctc, waves, tmp_path):
    """The streaming transducer: WeNet-style streaming encoder + decoder + joiner in onnxruntime, greedy chunk by chunk,
    equals malsori's greedy search over its streaming encoder (sherpa-onnx has no loader for it: docs/export.md)."""
    from malsori.decode.transducer import transducer_greedy

    path = train_transducer(streaming_ctc, tmp_path / "transducer", steps=5)
    out = export_onnx(path, tmp_path / "onnx")
    assert sorted(out.graphs) == ["decoder", "encoder", "joiner", "streaming-encoder"]
    rec = Recognizer.load(path, device="cpu")
    chunk, left, emitted = 4, 2, 0
    onnx = OnnxStreaming(tmp_path / "onnx", rec.fbank.cfg, chunk, left)
    for wave in waves:
        used = onnx.chunks(onnx.features(wave))
        frames = (used - 1) * chunk * 4 + out.streaming["right_context"] + (chunk - 1) * 4 + 1 if used else 0
        with torch.inference_mode():
            feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            enc, _ = rec.model.encoder.forward_chunk(rec.cmvn(feats, lens)[:, :frames], None, chunk, left)
            want = transducer_greedy(rec.model, enc, torch.tensor([enc.size(1)]), max_symbols_per_frame=1)[0].tokens
            projected = rec.model.joiner.enc_proj(enc).numpy()
        got = np.concatenate([*onnx.outputs(wave), np.zeros_like(projected[:, :0])], axis=1)
        assert got.shape == projected.shape and np.abs(got - projected).max() < LOGPROB_TOL
        assert onnx.decode(wave).tokens == want
        emitted += len(want)
    assert emitted > 20


def _tiny_model(tmp_path: Path, name: str, head: str = "ctc", features: FbankConfig | None = None, predictor: str = "stateless",
                encoder: str = "conformer") -> Path:
    torch.manual_seed(0)
    tok = train_tokenizer("char", ["hello world"])
    cfg = ModelConfig(encoder=encoder, head=head, conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, conv_kernel=3))
    cfg.transducer.predictor.kind = predictor
    cfg.lstm.hidden_size, cfg.lstm.num_layers, cfg.transformer.d_model, cfg.transformer.num_layers = 32, 1, 32, 1
    feat = features or FbankConfig(snip_edges=False, high_freq=-400.0, input_scale=1.0)
    return save_model_dir(tmp_path / name, build_model(cfg, feat.num_mel_bins, tok.vocab_size), cfg, feat, tok, GlobalCMVN(feat.num_mel_bins))


def test_transformer_encoder_exports_offline_ctc(waves, tmp_path):
    path = _tiny_model(tmp_path, "transformer", encoder="transformer")
    assert list(export_onnx(path, tmp_path / "onnx").graphs) == ["model", "zipformer-ctc"]
    rec = Recognizer.load(path, device="cpu")
    for role in ("model", "zipformer-ctc"):
        onnx = OnnxCTC(tmp_path / "onnx", rec.fbank.cfg, role)
        for wave in waves[:3]:
            want, n = _torch_ctc(rec, wave)
            got, lens = onnx.log_probs(wave)
            assert int(lens[0]) == n and np.abs(got[0, :n] - want[:n]).max() < LOGPROB_TOL


def test_export_refuses_what_sherpa_onnx_cannot_run(tmp_path):
    cases = {
        "attention": (_tiny_model(tmp_path, "aed", head="attention"), "model.head 'attention' has no sherpa-onnx layout"),
        "snip": (_tiny_model(tmp_path, "snip", features=FbankConfig(input_scale=1.0)), "snip_edges=True (sherpa-onnx: False)"),
        "lstm": (_tiny_model(tmp_path, "lstm", head="transducer", predictor="lstm"), "predictor.kind is 'lstm'"),
        "scale": (_tiny_model(tmp_path, "scale", head="transducer", features=FbankConfig(snip_edges=False, high_freq=-400.0)),
                  "features.input_scale is 32768"),
        "lstm encoder": (_tiny_model(tmp_path, "lstm-enc", encoder="lstm"), "model.encoder 'lstm' does not export"),
        "missing": (tmp_path / "nothing", "not a malsori model folder"),
        "released": ("no-such-release", "no such model folder, and no released model of that name"),
    }
    for name, (model, message) in cases.items():
        with pytest.raises(MalsoriError) as e:
            export_onnx(model, tmp_path / f"out-{name}")
        assert message in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
        assert not (tmp_path / f"out-{name}").exists()


def test_export_folder_rules_and_cli(tmp_path):
    model = _tiny_model(tmp_path, "ctc")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    runner = CliRunner()
    for out, message in (("busy", "folder exists and is not empty (pass --force"), ("file", "exists and is not a folder")):
        r = runner.invoke(main, ["export", str(model), "--out", str(tmp_path / out)])
        assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert (tmp_path / "busy" / "keep.txt").exists()
    r = runner.invoke(main, ["export", str(model), "--format", "onnx", "--out", str(tmp_path / "busy"), "--force", "--int8"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [
        "export.json", "model.int8.onnx", "model.onnx", "tokens.txt", "zipformer-ctc.int8.onnx", "zipformer-ctc.onnx"]
    assert (tmp_path / "busy" / "tokens.txt").read_text().splitlines()[0] == "<blank> 0"
    r = runner.invoke(main, ["export", str(model), "--format", "tflite", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "tflite" in r.output
    r = runner.invoke(main, ["export", str(model), "--out", str(tmp_path / "file" / "out")])  # its parent is a file
    assert r.exit_code == 2 and "cannot write the exported folder" in r.output and r.output.count("\n") == 1, r.output
