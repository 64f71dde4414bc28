"""`malsori export MODEL --format onnx --out DIR`: a trained speech model → ONNX graphs in the layouts sherpa-onnx loads.

A CTC model gives `model.onnx` (WeNet CTC, `OfflineRecognizer.from_wenet_ctc`; sherpa-onnx feeds it 16-bit sample
values and, since February 2026, dithers its features), for models trained at features.input_scale 1 also
`zipformer-ctc.onnx` (the same network in icefall's CTC layout, `OfflineRecognizer.from_zipformer_ctc`: samples in
[-1, 1], no dither, so its features equal malsori's) and,
when its encoder is a causal chunked Conformer, `streaming.onnx` (WeNet streaming CTC, `OnlineRecognizer.from_wenet_ctc`); a transducer with the
stateless prediction network gives `encoder.onnx`, `decoder.onnx`, `joiner.onnx` (`OfflineRecognizer.from_transducer`).
Every folder also holds `tokens.txt` (symbol and id per line, `<blank>` = 0) and `export.json` (what was exported,
from which weights, and how to load it). `int8=True` adds `*.int8.onnx` beside each graph: onnxruntime's dynamic
quantization of the matrix products' weights.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from malsori.errors import MalsoriError
from malsori.export.frontend import UNIT_SCALE, WENET_SCALE, FoldedFrontEnd, check_frontend, check_scale
from malsori.export.layouts import OfflineCTC, StreamingEncoder, TransducerDecoder, TransducerEncoder, TransducerJoiner
from malsori.files import follow_umask, strict_json
from malsori.pretrained import ModelDir, load_model_dir

OPSET = 17  # LayerNormalization is a single op from 17 on; onnxruntime ≥ 1.17 and sherpa-onnx run it
KINDS = ("ctc", "transducer")  # heads with a sherpa-onnx layout
ENCODERS = ("conformer", "transformer")  # encoders that trace to graphs valid for every length (the LSTM's frame stacking does not)


@dataclass
class Exported:
    """What `export_onnx` wrote (also saved as DIR/export.json)."""

    kind: str  # ctc | transducer
    source: str  # the model folder
    weights_sha256: str  # of the exported weights (config.json's)
    graphs: dict[str, str]  # role (model, zipformer-ctc, streaming, encoder, streaming-encoder, decoder, joiner) → file in DIR
    int8: dict[str, str] = field(default_factory=dict)  # role → quantized file name (with --int8)
    feature_dim: int = 80  # fbank bins: sherpa-onnx's feature_dim argument
    sample_rate: int = 16000  # the model's rate: sherpa-onnx's sample_rate argument
    subsampling_factor: int = 4  # encoder frames per feature frame
    vocab_size: int = 0  # tokens (tokens.txt lines)
    context_size: int = 0  # transducer: labels the decoder reads
    streaming: dict = field(default_factory=dict)  # streaming CTC: the metadata sherpa-onnx reads (head, num_blocks, ...)


def export_onnx(model: str | os.PathLike, out: str | os.PathLike, int8: bool = False, force: bool = False,
                chunk_size: int = 16, left_chunks: int = 4) -> Exported:
    """Export a speech model folder (or a released model's name) into the folder `out`; one-line MalsoriError for a
    model that has no sherpa-onnx layout or front-end, or an `out` that exists and is not empty (unless `force`).
    `chunk_size` (encoder frames) and `left_chunks` are the streaming model's defaults recorded in its metadata."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MalsoriError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MalsoriError(f"{out}: folder exists and is not empty (pass --force to replace it)")
    if chunk_size < 1 or left_chunks < 1:
        raise MalsoriError(f"chunk_size and left_chunks must be >= 1 (the WeNet streaming cache holds chunk_size × "
                           f"left_chunks frames), got {chunk_size} and {left_chunks}")
    md = load_model_dir(model)
    where = f"{md.path / 'config.json'}"
    if md.task != "asr":
        raise MalsoriError(f"{where}: a model of task {md.task!r}; only speech recognizers export to ONNX")
    kind = md.config["model"].get("head", "ctc")
    if kind not in KINDS:
        raise MalsoriError(f"{where}: model.head {kind!r} has no sherpa-onnx layout (exportable: {', '.join(KINDS)})")
    encoder = md.config["model"].get("encoder", "conformer")
    if encoder not in ENCODERS:
        raise MalsoriError(f"{where}: model.encoder {encoder!r} does not export (its traced graph would fit one input "
                           f"length only); exportable encoders: {', '.join(ENCODERS)}")
    check_frontend(md.fbank.cfg, where)
    check_scale(md.fbank.cfg, WENET_SCALE, where, "WeNet CTC models")
    plan = _ctc_graphs(md, where, chunk_size, left_chunks) if kind == "ctc" else _transducer_graphs(md, where, chunk_size, left_chunks)
    info = Exported(kind, str(md.path), str(md.config.get("weights_sha256", "")), {}, {},
                    md.fbank.cfg.num_mel_bins, md.fbank.cfg.sample_rate, int(md.model.encoder.subsampling_factor),
                    md.tokenizer.vocab_size)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        for role, (module, args, names, dynamic, meta) in plan.items():
            path = tmp / f"{role}.onnx"
            _write_graph(module, args, path, names, dynamic, meta)
            info.graphs[role] = path.name
            if role == "decoder":
                info.context_size = int(meta["context_size"])
            if role.startswith("streaming"):
                info.streaming = meta
            if int8:
                info.int8[role] = quantize_int8(path).name
        (tmp / "tokens.txt").write_text(tokens_txt(md), encoding="utf-8")
        (tmp / "export.json").write_text(strict_json(asdict(info), str(out / "export.json"), indent=1), encoding="utf-8")
        follow_umask(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise MalsoriError(f"{out}: cannot write the exported folder ({e.strerror or e})") from None
        raise
    return info


def tokens_txt(md: ModelDir) -> str:
    """sherpa-onnx's tokens.txt: "symbol id" per line; malsori's blank is already `<blank>` at id 0."""
    lines = []
    for i in range(md.tokenizer.vocab_size):
        piece = md.tokenizer.id_to_piece(i)
        if not piece or any(c.isspace() for c in piece):
            raise MalsoriError(f"{md.path}: token {i} ({piece!r}) is empty or holds whitespace; tokens.txt cannot carry it")
        lines.append(f"{piece} {i}\n")
    return "".join(lines)


def _ctc_graphs(md: ModelDir, where: str, chunk_size: int, left_chunks: int) -> dict:
    """The offline WeNet CTC graph (full-context models) and the streaming one (causal chunked Conformers)."""
    model, enc, feat_dim = md.model, md.model.encoder, md.fbank.cfg.num_mel_bins
    chunk = getattr(enc, "chunk", None)
    fixed_chunk = chunk is not None and chunk.chunk_size > 0 and not chunk.dynamic_chunk
    plan = {}
    if not fixed_chunk:
        axes = {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T"}, "log_probs_lens": {0: "N"}}
        layouts = [("model", WENET_SCALE, "wenet_ctc"), ("zipformer-ctc", UNIT_SCALE, "zipformer2_ctc")]
        for role, scale, model_type in layouts[: 2 if md.fbank.cfg.input_scale <= UNIT_SCALE else 1]:
            meta = {"model_type": model_type, "version": "1", "model_author": "malsori", "comment": "non-streaming",
                    "subsampling_factor": enc.subsampling_factor, "vocab_size": model.vocab_size}
            module = OfflineCTC(model, FoldedFrontEnd(md.cmvn, md.fbank.cfg.input_scale, scale))
            plan[role] = (module, (torch.randn(2, 203, feat_dim), torch.tensor([203, 150])),
                          (["x", "x_lens"], ["log_probs", "log_probs_lens"]), axes, meta)
    if _streamable(enc):
        plan["streaming"] = _streaming(md, chunk_size, left_chunks)
    if not plan:
        raise MalsoriError(f"{where}: the encoder attends in fixed chunks (model.conformer.chunk.chunk_size "
                           f"{chunk.chunk_size}, not dynamic) and cannot stream (chunk.causal false): no WeNet layout fits")
    return plan


def _streamable(enc: nn.Module) -> bool:
    """A causal chunked Conformer: its forward_chunk state is WeNet's (per-layer keys/values and conv inputs)."""
    chunk = getattr(enc, "chunk", None)
    return chunk is not None and chunk.causal and type(enc).__name__ == "ConformerEncoder"


def _streaming(md: ModelDir, chunk_size: int, left_chunks: int, scale: float = WENET_SCALE) -> tuple:
    """WeNet's streaming layout (CTC: log_probs; transducer: encoder_out, the joiner's encoder projection)."""
    enc = md.model.encoder
    module = StreamingEncoder(md.model, FoldedFrontEnd(md.cmvn, md.fbank.cfg.input_scale, scale))
    att = enc.layers[0].attention
    layers, heads, head_dim, d = len(enc.layers), att.num_heads, att.head_dim, enc.output_dim
    right = enc.subsampling.min_frames - 1
    cache = chunk_size * left_chunks
    frames = (chunk_size - 1) * enc.subsampling_factor + right + 1
    args = (torch.randn(1, frames, md.fbank.cfg.num_mel_bins), torch.tensor([cache + 2 * chunk_size]), torch.tensor([cache]),
            torch.randn(layers, heads, cache, 2 * head_dim), torch.randn(layers, 1, d, enc.conv_context),
            torch.ones(1, 1, cache + chunk_size, dtype=torch.bool))
    output = "encoder_out" if module.transducer else "log_probs"
    names = (["x", "offset", "required_cache_size", "attn_cache", "conv_cache", "attn_mask"],
             [output, "r_attn_cache", "r_conv_cache"])
    dynamic = {"x": {1: "T"}, "attn_cache": {2: "R"}, "attn_mask": {2: "RC"}, output: {1: "C"}, "r_attn_cache": {2: "R"}}
    meta = {"model_type": "malsori_streaming_transducer" if module.transducer else "wenet_ctc", "version": "1",
            "model_author": "malsori", "comment": "streaming", "input_scale": scale,
            "head": heads, "num_blocks": layers, "output_size": d, "cnn_module_kernel": enc.conv_context + 1,
            "right_context": right, "subsampling_factor": enc.subsampling_factor, "vocab_size": md.model.vocab_size,
            "chunk_size": chunk_size, "left_chunks": left_chunks}
    return module, args, names, dynamic, meta


def _transducer_graphs(md: ModelDir, where: str, chunk_size: int, left_chunks: int) -> dict:
    """icefall's three transducer graphs (encoder with the joiner's encoder projection, stateless decoder, joiner)."""
    model = md.model
    if model.cfg.predictor.kind != "stateless":
        raise MalsoriError(f"{where}: model.transducer.predictor.kind is {model.cfg.predictor.kind!r}; sherpa-onnx's "
                           f"transducer decoder reads only the last labels (train with predictor.kind: stateless)")
    chunk = getattr(model.encoder, "chunk", None)
    if chunk is not None and chunk.chunk_size > 0 and not chunk.dynamic_chunk:
        raise MalsoriError(f"{where}: the encoder attends in fixed chunks (chunk_size {chunk.chunk_size}, not dynamic); "
                           f"the offline transducer layout runs full context")
    check_scale(md.fbank.cfg, UNIT_SCALE, where, "transducer")
    feat_dim, ctx, j = md.fbank.cfg.num_mel_bins, model.cfg.predictor.context, model.cfg.joiner_dim
    front = FoldedFrontEnd(md.cmvn, md.fbank.cfg.input_scale, UNIT_SCALE)
    enc_meta = {"model_type": "conformer", "version": "1", "model_author": "malsori", "comment": "non-streaming",
                "subsampling_factor": model.encoder.subsampling_factor}
    plan = {
        "encoder": (TransducerEncoder(model, front), (torch.randn(2, 203, feat_dim), torch.tensor([203, 150])),
                    (["x", "x_lens"], ["encoder_out", "encoder_out_lens"]),
                    {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T"}, "encoder_out_lens": {0: "N"}},
                    enc_meta),
        "decoder": (TransducerDecoder(model), (torch.randint(0, model.vocab_size, (3, ctx)),), (["y"], ["decoder_out"]),
                    {"y": {0: "N"}, "decoder_out": {0: "N"}}, {"vocab_size": model.vocab_size, "context_size": ctx}),
        "joiner": (TransducerJoiner(model), (torch.randn(3, j), torch.randn(3, j)), (["encoder_out", "decoder_out"], ["logit"]),
                   {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}}, {"joiner_dim": j}),
    }
    if _streamable(model.encoder):  # for onnxruntime (runtime.OnnxStreamingTransducer); sherpa-onnx has no such loader
        plan["streaming-encoder"] = _streaming(md, chunk_size, left_chunks, UNIT_SCALE)
    return plan


def _write_graph(module: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]], dynamic: dict,
                 meta: dict) -> None:
    """Trace `module` on `args` into an ONNX file (TorchScript exporter: dynamic axes as named) with `meta` as its
    metadata_props."""
    import onnx

    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's business
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=names[0],
                          output_names=names[1], dynamic_axes=dynamic, do_constant_folding=True)
    graph = onnx.load(str(path))
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.save(graph, str(path))


def quantize_int8(path: Path) -> Path:
    """onnxruntime's dynamic quantization (int8 weights of MatMul/Gemm, activations quantized per call) → *.int8.onnx;
    the metadata is kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_suffix(".int8.onnx")
    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice to pre-process for static quantization does not apply here
    try:
        quantize_dynamic(str(path), str(target), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(quiet)
    source, quantized = onnx.load(str(path)), onnx.load(str(target))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    onnx.save(quantized, str(target))
    return target
