"""Models: encoders joined to heads (CTC, …) and language models, built from tagged configs by name; importing the
package registers every family (`families.py`)."""

from malsori.models import families  # noqa: F401  (registers the families)
from malsori.models.ctc import CTCModel
from malsori.models.registry import ModelConfig, build_model, register_encoder, register_head

__all__ = ["CTCModel", "ModelConfig", "build_model", "register_encoder", "register_head"]
