"""Fixtures for the export tests: the released model re-based to features.input_scale 1 (the scale every sherpa-onnx
layout reproduces exactly), and small heads trained on its encoder over the demo recordings."""

from __future__ import annotations

import math
from pathlib import Path

from malsori.config import from_dict
from malsori.features import FbankConfig
from malsori.models.registry import ModelConfig
from malsori.pretrained import load_model_dir, save_model_dir


def rebase_scale(model: str | Path, out: Path, scale: float = 1.0) -> Path:
    """A copy of a speech model folder whose front-end reads waves × `scale`: log-mel bins move by 2 ln(scale ratio),
    and so does the CMVN mean, so normalized features are unchanged wherever the energy clears the log floor."""
    md = load_model_dir(model)
    feat = from_dict(FbankConfig, md.config["features"], "features")
    md.cmvn.mean -= 2.0 * math.log(feat.input_scale / scale)
    feat.input_scale = scale
    return save_model_dir(out, md.model, from_dict(ModelConfig, md.config["model"], "model"), feat, md.tokenizer, md.cmvn)
