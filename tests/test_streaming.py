"""Streaming recognition through `Recognizer.stream`: same result as the chunk-masked offline computation for any
piece sizes, timestamps from the stream start, endpointing that splits a stream into finalized utterances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from malsori.audio import load_audio
from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from malsori.decode.options import DecodeOptions
from malsori.decode.transducer import modified_beam_search, transducer_greedy
from malsori.errors import ConfigError
from malsori.features import Fbank, FbankConfig, GlobalCMVN
from malsori.models.registry import ModelConfig, build_model
from malsori.nn.chunked import ChunkConfig
from malsori.nn.conformer import ConformerConfig
from malsori.pretrained import Recognizer
from malsori.streaming import StreamConfig
from malsori.tokenizer import train_tokenizer

NO_ENDPOINT = dict(endpoint_silence_s=1e9, endpoint_idle_s=1e9, max_utterance_s=1e9, keep_snapshots=True)


def _recognizer(head: str, causal: bool = True) -> Recognizer:
    torch.manual_seed(0)
    tokenizer = train_tokenizer("char", ["hello world", "streaming speech"])
    conformer = ConformerConfig(d_model=48, num_layers=2, num_heads=2, conv_kernel=7, dropout=0.0,
                                subsampling_channels=8, chunk=ChunkConfig(causal=causal))
    cfg = ModelConfig(encoder="conformer", conformer=conformer, head="attention" if "mocha" in head else head)
    cfg.attention.decoder = "transformer" if head == "mocha_transformer" else "las"
    cfg.attention.las_attention, cfg.attention.transformer_cross, cfg.attention.ctc_weight = "mocha", "mocha", 0.0
    cfg.attention.d_model, cfg.attention.num_heads = 32, 2
    cfg.attention.hidden_size, cfg.attention.embed_dim, cfg.attention.attention_dim = 32, 16, 16
    cfg.transducer.predictor.embed_dim = 32
    cfg.transducer.predictor.hidden_size = 32
    cfg.transducer.joiner_dim = 32
    fbank = Fbank(FbankConfig())
    model = build_model(cfg, fbank.dim, tokenizer.vocab_size)
    return Recognizer(model, tokenizer, fbank, GlobalCMVN(fbank.dim), "cpu")


@pytest.fixture(scope="module")
def wave(tiny_corpus) -> np.ndarray:
    audio = sorted((Path(tiny_corpus["test"]).parent / "audio" / "test").glob("*.flac"))
    return np.concatenate([load_audio(a) for a in audio[:2]])


def head_of(model) -> str:
    return "mocha" if type(model).__name__ == "AttentionModel" else type(model).__name__


def _offline(rec: Recognizer, wave: np.ndarray, chunk: int, left: int, method: str, right: int = 0):
    """The same decoding done on the whole utterance with the equivalent chunk mask (and look-ahead copies)."""
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        enc, enc_lens = rec.model.encoder(rec.cmvn(feats), lens, chunk_size=chunk, left_chunks=left, right_context=right)
        model = rec.model
        if head_of(model) == "mocha":
            return model.greedy(enc, enc_lens)[0]
        if type(model).__name__ == "CTCModel":
            lp = model.head(enc).float().log_softmax(-1)
            return (ctc_greedy(lp, enc_lens) if method == "greedy" else ctc_prefix_beam_search(lp, enc_lens, 4))[0]
        return (transducer_greedy(model, enc, enc_lens) if method == "greedy" else modified_beam_search(model, enc, enc_lens, 4))[0]


def _stream(rec: Recognizer, wave: np.ndarray, cfg: StreamConfig, pieces: list[int]):
    stream = rec.stream(cfg)
    start, i = 0, 0
    while start < len(wave):
        stream.accept_waveform(wave[start : start + pieces[i % len(pieces)]])
        start, i = start + pieces[i % len(pieces)], i + 1
    return stream, stream.finish()


@pytest.mark.parametrize("head,method", [("ctc", "greedy"), ("ctc", "beam"), ("transducer", "greedy"), ("transducer", "beam"),
                                         ("mocha", "greedy"), ("mocha_transformer", "greedy")])
def test_stream_equals_chunk_masked_offline(wave, head, method):
    rec = _recognizer(head)
    offline = _offline(rec, wave, chunk=8, left=2, method=method)
    assert offline.tokens, "an untrained model still emits tokens; an empty result would make this test vacuous"
    for pieces in ([len(wave)], [1600], [123, 4567, 999]):
        cfg = StreamConfig(chunk_ms=320, left_chunks=2, decode=DecodeOptions(method, beam_size=4), **NO_ENDPOINT)
        stream, finals = _stream(rec, wave, cfg, pieces)
        assert len(finals) == 1
        assert finals[0].tokens == offline.tokens
        assert [w.start for w in finals[0].words] == [w.start for w in rec._words(offline.tokens, offline.token_frames)]
        assert finals[0].score == pytest.approx(offline.score, abs=1e-3)
    # the partial results only ever grow for greedy search (tokens are never taken back)
    if method == "greedy":
        assert len(stream.snapshots) > 3
        texts = [" ".join(s.words) for s in stream.snapshots]
        assert all(b.startswith(a.rstrip()) or not a for a, b in zip(texts, texts[1:]))


@pytest.mark.parametrize("head,method", [("ctc", "greedy"), ("transducer", "beam")])
def test_stream_with_look_ahead_equals_offline(wave, head, method):
    rec = _recognizer(head)
    offline = _offline(rec, wave, chunk=4, left=2, method=method, right=3)
    assert offline.tokens
    for pieces in ([len(wave)], [123, 4567, 999]):
        cfg = StreamConfig(chunk_ms=160, left_chunks=2, lookahead_ms=120, decode=DecodeOptions(method, beam_size=4),
                           **NO_ENDPOINT)
        _, finals = _stream(rec, wave, cfg, pieces)
        assert finals[0].tokens == offline.tokens
        assert finals[0].score == pytest.approx(offline.score, abs=1e-3)
    with pytest.raises(ConfigError, match="lookahead_ms"):
        rec.stream(StreamConfig(lookahead_ms=50))


def test_endpointing_splits_a_stream_into_utterances(wave):
    """A head rigged to emit one token then blanks: every `endpoint_silence_s` the utterance is finalized."""
    rec = _recognizer("ctc")
    with torch.no_grad():
        rec.model.head.weight.zero_()
        rec.model.head.bias.zero_()
        rec.model.head.bias[5] = 100.0  # token 5 on every frame = one emission per utterance (repeats collapse)
    cfg = StreamConfig(chunk_ms=160, left_chunks=2, endpoint_silence_s=1.0, max_utterance_s=1e9)
    stream, finals = _stream(rec, wave, cfg, [3200])
    duration = len(wave) / 16000
    assert len(finals) >= int(duration / 1.2) - 1
    assert all(f.tokens == [5] for f in finals)
    starts = [f.words[0].start for f in finals]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    gaps = np.diff(starts)
    assert np.all(gaps >= 1.0) and np.all(gaps <= 1.0 + 0.16 + 0.04 + 1e-6)  # endpoint checked at chunk boundaries


def test_idle_stream_restarts_and_keeps_state_bounded(wave):
    rec = _recognizer("ctc")
    with torch.no_grad():
        rec.model.head.bias[0] = 100.0  # blank everywhere: nothing is ever recognized
    cfg = StreamConfig(chunk_ms=160, left_chunks=2, endpoint_idle_s=0.5)
    stream, finals = _stream(rec, np.tile(wave, 3), cfg, [1600])
    assert finals == []
    assert stream.frames * stream.frame_s < 0.5 + 0.16 + 1e-6  # the current utterance restarted recently
    assert stream.state.keys.shape[3] <= 2 * 4


def test_stream_refuses_what_cannot_stream():
    with pytest.raises(ConfigError, match="causal"):
        _recognizer("ctc", causal=False).stream()
    rec = _recognizer("ctc")
    with pytest.raises(ConfigError, match="chunk_ms"):
        rec.stream(StreamConfig(chunk_ms=50))
    with pytest.raises(ConfigError, match="method"):
        rec.stream(StreamConfig(decode=DecodeOptions(method="viterbi")))
    with pytest.raises(ConfigError, match="Hz"):
        rec.stream().accept_waveform(np.zeros(100, dtype=np.float32), sample_rate=8000)


def _has_microphone() -> bool:
    try:
        import sounddevice as sd

        sd.check_input_settings(samplerate=16000, channels=1, dtype="float32")
        return True
    except Exception:  # no PortAudio library, or no usable input device
        return False


def test_stream_cli(tiny_corpus, tmp_path, wave):
    import json
    import subprocess
    import sys

    from malsori.audio import save_audio
    from malsori.pretrained import save_model_dir

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "malsori.cli", "stream", *map(str, args)], capture_output=True, text=True, timeout=300)

    for name, causal in (("stream_model", True), ("offline_model", False)):
        rec = _recognizer("ctc", causal=causal)
        cfg = ModelConfig(encoder="conformer", head="ctc", conformer=rec.model.encoder.cfg)
        save_model_dir(tmp_path / name, rec.model, cfg, rec.fbank.cfg, rec.tokenizer, rec.cmvn)
    save_audio(tmp_path / "a.flac", wave)
    r = cli(tmp_path / "stream_model", tmp_path / "a.flac", "--fast", "--json", "--endpoint-silence", "1e9")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["words"] and "RTF" in r.stderr
    expected = _stream(_recognizer("ctc"), wave, StreamConfig(**NO_ENDPOINT), [5120])[1][0]
    assert rows[0]["text"] == expected.text
    from malsori.lm import NgramLM  # a word LM and hotwords in the stream's beam search

    NgramLM.train(["a cat sat", "the cat"], order=2).write_arpa(tmp_path / "lm.arpa")
    (tmp_path / "hot.txt").write_text("cat :1\n")
    lm = ("--method", "beam", "--lm", tmp_path / "lm.arpa", "--word-bonus", "1", "--hotwords", tmp_path / "hot.txt")
    r = cli(tmp_path / "stream_model", tmp_path / "a.flac", "--fast", "--json", "--endpoint-silence", "1e9", *lm)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, r.stderr
    cases = [((tmp_path / "stream_model", tmp_path / "a.flac", *lm, "--lm-rescore"), "rescorers"),
             ((tmp_path / "offline_model", tmp_path / "a.flac"), "causal"),
             ((tmp_path / "stream_model", tmp_path / "a.flac", "--chunk-ms", "30"), "chunk_ms"),
             ((tmp_path / "stream_model",), "FILE or --mic")]
    if not _has_microphone():
        cases.append(((tmp_path / "stream_model", "--mic"), "--mic"))
    for args, needle in cases:
        r = cli(*args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
