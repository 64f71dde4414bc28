"""Export trained speech models to ONNX in the layouts sherpa-onnx's runtimes load (WeNet CTC offline and streaming,
icefall's encoder/decoder/joiner transducer), with the CMVN folded into the graph; onnxruntime runners check them."""

from malsori.export.onnx import Exported, export_onnx

__all__ = ["Exported", "export_onnx"]
