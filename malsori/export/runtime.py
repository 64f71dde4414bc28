"""Running an exported folder: onnxruntime with malsori's own front-end and searches (what the tests compare with
PyTorch, and what benchmarks/bench_export.py times), and the sherpa-onnx recognizer that loads each layout.

The features given to a graph are those sherpa-onnx computes (kaldi fbank of the samples × the layout's scale, no
dither), made by malsori's `Fbank`, which matches kaldi-native-fbank to float32 rounding (tests/test_features.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from malsori.decode.ctc import ctc_greedy
from malsori.decode.result import Hypothesis
from malsori.errors import MalsoriError
from malsori.export.frontend import UNIT_SCALE, WENET_SCALE
from malsori.features import Fbank, FbankConfig
from malsori.tokenizer import WORD

SCALES = {"model": WENET_SCALE, "streaming": WENET_SCALE, "zipformer-ctc": UNIT_SCALE, "encoder": UNIT_SCALE,
          "streaming-encoder": UNIT_SCALE}  # samples × this feed each graph's fbank


def read_export(folder: str | Path) -> dict:
    """export.json of an exported folder (MalsoriError when it is not one)."""
    path = Path(folder) / "export.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MalsoriError(f"{path}: not an exported model folder ({e})") from None


def session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads (and one inter-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Features:
    """sherpa-onnx's features for a layout: kaldi fbank (malsori's) of the samples × the layout's scale."""

    def __init__(self, cfg: FbankConfig, role: str) -> None:
        self.fbank = Fbank(replace(cfg, input_scale=SCALES[role], dither=0.0))

    @torch.inference_mode()
    def __call__(self, wave: np.ndarray) -> np.ndarray:
        feats, _ = self.fbank(torch.from_numpy(np.asarray(wave, dtype=np.float32))[None], torch.tensor([len(wave)]))
        return feats.numpy()


class OnnxCTC:
    """An offline CTC graph (model.onnx or zipformer-ctc.onnx) under onnxruntime, greedy search."""

    def __init__(self, folder: str | Path, features: FbankConfig, role: str = "model", threads: int = 1, int8: bool = False) -> None:
        info = read_export(folder)
        self.sess = session(Path(folder) / (info["int8"] if int8 else info["graphs"])[role], threads)
        self.features = Features(features, role)

    def log_probs(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.features(wave)
        return tuple(self.sess.run(None, {"x": x, "x_lens": np.array([x.shape[1]], dtype=np.int64)}))

    def decode(self, wave: np.ndarray) -> Hypothesis:
        lp, lens = self.log_probs(wave)
        return ctc_greedy(torch.from_numpy(lp), torch.from_numpy(lens))[0]


class TransducerGreedy:
    """sherpa-onnx's greedy transducer search over the decoder and joiner graphs, fed projected encoder frames in
    pieces: at most one label per frame; the decoder reads the last `context` labels, (-1, …, -1, blank) at first."""

    def __init__(self, decoder, joiner, context: int) -> None:
        self.decoder, self.joiner, self.context = decoder, joiner, context
        self.history, self.hyp, self.frame = [-1] * (context - 1) + [0], Hypothesis([], 0.0, []), 0
        self._decode()

    def _decode(self) -> None:
        self.dec = self.decoder.run(None, {"y": np.array([self.history[-self.context :]], dtype=np.int64)})[0]

    def advance(self, enc: np.ndarray) -> None:
        """enc [T, J]: the next projected encoder frames."""
        for t in range(enc.shape[0]):
            logit = self.joiner.run(None, {"encoder_out": enc[t : t + 1], "decoder_out": self.dec})[0][0]
            y = int(logit.argmax())
            self.hyp.score += float(logit[y] - np.logaddexp.reduce(logit))
            if y != 0:
                self.hyp.tokens.append(y)
                self.hyp.token_frames.append(self.frame)
                self.history.append(y)
                self._decode()
            self.frame += 1


class OnnxTransducer:
    """The three transducer graphs under onnxruntime, with sherpa-onnx's greedy search (`TransducerGreedy`)."""

    def __init__(self, folder: str | Path, features: FbankConfig, threads: int = 1, int8: bool = False) -> None:
        info = read_export(folder)
        files = info["int8"] if int8 else info["graphs"]
        self.encoder, self.decoder, self.joiner = (session(Path(folder) / files[r], threads) for r in ("encoder", "decoder", "joiner"))
        self.context, self.features = int(info["context_size"]), Features(features, "encoder")

    def decode(self, wave: np.ndarray) -> Hypothesis:
        x = self.features(wave)
        enc, lens = self.encoder.run(None, {"x": x, "x_lens": np.array([x.shape[1]], dtype=np.int64)})
        search = TransducerGreedy(self.decoder, self.joiner, self.context)
        search.advance(enc[0, : int(lens[0])])
        return search.hyp


class OnnxStreaming:
    """streaming.onnx (CTC: greedy CTC) or streaming-encoder.onnx (transducer: `TransducerGreedy` over the decoder and
    joiner graphs, chunk by chunk) under onnxruntime, driven as sherpa-onnx's OnlineRecognizer drives a WeNet model:
    chunks of (C-1)·s + r + 1 feature frames every C·s frames, a cache of C × left_chunks frames with its mask."""

    def __init__(self, folder: str | Path, features: FbankConfig, chunk_size: int, left_chunks: int, threads: int = 1,
                 int8: bool = False) -> None:
        info = read_export(folder)
        files = info["int8"] if int8 else info["graphs"]
        self.role = "streaming" if "streaming" in files else "streaming-encoder"
        self.sess = session(Path(folder) / files[self.role], threads)
        self.meta, self.features = info["streaming"], Features(features, self.role)
        self.chunk, self.left = chunk_size, left_chunks
        if self.role == "streaming-encoder":
            self.decoder, self.joiner = (session(Path(folder) / files[r], threads) for r in ("decoder", "joiner"))
            self.context = int(info["context_size"])

    def chunks(self, feats: np.ndarray) -> int:
        """How many chunks sherpa-onnx decodes from these frames (it waits for one frame more than a chunk needs)."""
        m, s = self.meta, self.meta["subsampling_factor"]
        length, shift = (self.chunk - 1) * s + m["right_context"] + 1, self.chunk * s
        return max(0, (feats.shape[1] - length - 1) // shift + 1)

    def outputs(self, wave: np.ndarray):
        """Each chunk's output [1, C, V or J], in order."""
        m = self.meta
        feats, s = self.features(wave), m["subsampling_factor"]
        length, shift = (self.chunk - 1) * s + m["right_context"] + 1, self.chunk * s
        cache = self.chunk * self.left
        head_dim = m["output_size"] // m["head"]
        attn = np.zeros((m["num_blocks"], m["head"], cache, 2 * head_dim), np.float32)
        conv = np.zeros((m["num_blocks"], 1, m["output_size"], m["cnn_module_kernel"] - 1), np.float32)
        offset = cache
        for k in range(self.chunks(feats)):
            seen = offset - cache  # encoder frames before this chunk: that many cache slots hold real frames
            mask = np.ones((1, 1, cache + self.chunk), bool)
            mask[..., : max(0, cache - seen)] = False
            out, attn, conv = self.sess.run(None, {
                "x": feats[:, k * shift : k * shift + length], "offset": np.array([offset], np.int64),
                "required_cache_size": np.array([cache], np.int64), "attn_cache": attn, "conv_cache": conv, "attn_mask": mask})
            offset += out.shape[1]
            yield out

    def decode(self, wave: np.ndarray) -> Hypothesis:
        if self.role == "streaming-encoder":
            search = TransducerGreedy(self.decoder, self.joiner, self.context)
            for enc in self.outputs(wave):
                search.advance(enc[0])
            return search.hyp
        lp = np.concatenate([*self.outputs(wave), np.zeros((1, 0, self.meta["vocab_size"]), np.float32)], axis=1)
        return ctc_greedy(torch.from_numpy(lp), torch.tensor([lp.shape[1]]))[0]


def sherpa_recognizer(folder: str | Path, role: str, threads: int = 1, int8: bool = False, chunk_size: int = 16,
                      left_chunks: int = 4):
    """The sherpa-onnx recognizer that loads one layout of an exported folder: model (from_wenet_ctc), zipformer-ctc
    (from_zipformer_ctc), streaming (OnlineRecognizer.from_wenet_ctc) or transducer (from_transducer)."""
    import sherpa_onnx

    folder = Path(folder)
    info = read_export(folder)
    files = info["int8"] if int8 else info["graphs"]
    common = dict(tokens=str(folder / "tokens.txt"), num_threads=threads, sample_rate=info["sample_rate"],
                  feature_dim=info["feature_dim"])
    if role == "model":
        return sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(folder / files["model"]), **common)
    if role == "zipformer-ctc":
        return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(model=str(folder / files["zipformer-ctc"]), **common)
    if role == "streaming":
        return sherpa_onnx.OnlineRecognizer.from_wenet_ctc(model=str(folder / files["streaming"]), chunk_size=chunk_size,
                                                           num_left_chunks=left_chunks, **common)
    if role == "transducer":
        return sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(folder / files["encoder"]), decoder=str(folder / files["decoder"]),
            joiner=str(folder / files["joiner"]), model_type="transducer", **common)
    raise MalsoriError(f"{folder}: no sherpa-onnx loader for {role!r} (model, zipformer-ctc, streaming, transducer)")


def sherpa_tokens(recognizer, wave: np.ndarray, sample_rate: int = 16000, tail_s: float = 0.0) -> list[str]:
    """Token symbols (tokens.txt's; sherpa-onnx shows the word marker ▁ as a space) sherpa-onnx recognizes in `wave`
    (offline or online recognizer); an online stream gets `tail_s` seconds of silence after the audio, then ends."""
    if hasattr(recognizer, "is_ready"):
        s = recognizer.create_stream()
        s.accept_waveform(sample_rate, np.concatenate([wave, np.zeros(int(tail_s * sample_rate), np.float32)]))
        s.input_finished()
        while recognizer.is_ready(s):
            recognizer.decode_stream(s)
        return [t.replace(" ", WORD) for t in recognizer.tokens(s)]
    s = recognizer.create_stream()
    s.accept_waveform(sample_rate, wave)
    recognizer.decode_stream(s)
    return [t.replace(" ", WORD) for t in s.result.tokens]
