"""Models: encoders joined to heads (CTC, …), built from a `ModelConfig` by name."""

from malsori.models.ctc import CTCModel
from malsori.models.registry import ModelConfig, build_model, register_encoder, register_head

__all__ = ["CTCModel", "ModelConfig", "build_model", "register_encoder", "register_head"]
