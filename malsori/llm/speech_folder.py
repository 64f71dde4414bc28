"""A decoder-only speech model built from two trained folders — a speech model (its encoder, front end, CMVN and
tokenizer) and a GPT in the same tokens — and its model folder, which holds only what training changed.

The folder (config.json task "asr_llm") stores the projector, the GPT's LoRA tensors (or the whole GPT when fully
fine-tuned) and the encoder only if it was trained, beside the two source folders' paths and weights' sha256 (a
source that changed is refused), the front end and CMVN copied from the speech model. `load_model_dir` reads it as
a speech recognizer, so `malsori.load`, `transcribe` and `eval` use it like any speech model folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from malsori.config import from_dict, to_dict
from malsori.errors import ConfigError, MalsoriError
from malsori.features import Fbank, FbankConfig, GlobalCMVN
from malsori.llm.adapters import AdaptedLM, AdapterConfig, NamedTensors, load_trained
from malsori.llm.speech_prefix import DecoderOnlyASR, SpeechPrefixConfig
from malsori.pretrained import RELEASED_MODELS, ModelDir, load_model_dir, write_model_dir
from malsori.text import normalize
from malsori.tokenizer import Tokenizer

SPEECH_LLM_TASK = "asr_llm"  # config.json's task of a decoder-only speech model folder


def source_folders(encoder: str, base: str) -> tuple[ModelDir, ModelDir]:
    """The speech model whose encoder is used and the GPT, checked: a speech model, a language model, one tokenizer."""
    speech, lm = load_model_dir(encoder), load_model_dir(base)
    if speech.task != "asr" or not hasattr(speech.model, "encoder"):
        raise ConfigError(f"encoder: {speech.path} is not a speech model with an encoder (task {speech.task!r})")
    if lm.task != "lm":
        raise ConfigError(f"base: {lm.path} is a model of task {lm.task!r}, not a language model")
    if _pieces(speech.path) != _pieces(lm.path):
        raise ConfigError(f"base: {lm.path}'s tokenizer differs from {speech.path}'s (train the GPT with "
                          f"data.tokenizer_dir={speech.path})")
    return speech, lm


def _pieces(folder: Path) -> object:
    return json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))


def build_decoder_only(speech: ModelDir, lm: ModelDir, prefix: SpeechPrefixConfig, adapter: AdapterConfig, prompt: str) -> DecoderOnlyASR:
    """A fresh model: copies of the speech model's encoder and of the GPT (LoRA applied, or all of it trainable), a
    new projector; the prompt text is normalized like transcripts."""
    if adapter.kind == "prompt":
        raise ConfigError("adapter.kind: prompt tuning is not offered for decoder-only ASR (use lora or full; the "
                          "audio prefix already is a learned input)")
    gpt = AdaptedLM(copy.deepcopy(lm.model), adapter).gpt
    ids = lm.tokenizer.encode(normalize(prompt)) if prompt else []
    return DecoderOnlyASR(copy.deepcopy(speech.model.encoder), gpt, prefix, lm.tokenizer.special_ids.eos, ids)


def trained_tensors(model: DecoderOnlyASR) -> dict[str, torch.Tensor]:
    """What training changes (and the folder stores), by state-dict name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_speech_llm(path: Path, model: DecoderOnlyASR, speech: ModelDir, lm: ModelDir, adapter: AdapterConfig,
                    prompt: str, tokenizer: Tokenizer) -> Path:
    """Write the model folder (see the module docstring)."""
    meta = {"prefix": to_dict(model.cfg), "adapter": to_dict(adapter), "prompt": prompt,
            "encoder": _reference(speech.path), "encoder_weights_sha256": speech.config.get("weights_sha256"),
            "base": _reference(lm.path), "base_weights_sha256": lm.config.get("weights_sha256"),
            "features": speech.config["features"]}
    stats = (speech.path / "feature_stats.json").read_text(encoding="utf-8")
    return write_model_dir(path, SPEECH_LLM_TASK, NamedTensors(trained_tensors(model)), meta, tokenizer,
                           {"feature_stats.json": stats})


def _reference(folder: Path) -> str:
    """How the folder names a source: a released model by its name (found wherever malsori is installed), else
    the absolute path."""
    folder = folder.resolve()
    return folder.name if folder.parent == RELEASED_MODELS.resolve() else str(folder)


def load_speech_llm(path: Path, config: dict) -> ModelDir:
    """A decoder-only speech model folder (config.json already read) as a speech recognizer's ModelDir."""
    cfg_path = path / "config.json"
    try:
        speech, lm = source_folders(config.get("encoder", ""), config.get("base", ""))
        for what, folder in (("encoder", speech), ("base", lm)):
            if folder.config.get("weights_sha256") != config.get(f"{what}_weights_sha256"):
                raise MalsoriError(f"{cfg_path}: {what} {folder.path} is not the model this one was trained on (its "
                                   "weights' sha256 differs)")
        prefix = from_dict(SpeechPrefixConfig, config.get("prefix", {}), "prefix")
        adapter = from_dict(AdapterConfig, config.get("adapter", {}), "adapter")
        model = build_decoder_only(speech, lm, prefix, adapter, str(config.get("prompt", "")))
        fbank = Fbank(from_dict(FbankConfig, config["features"], "features"))
        cmvn = GlobalCMVN.from_dict(json.loads((path / "feature_stats.json").read_text(encoding="utf-8")))
    except ConfigError as e:
        raise MalsoriError(f"{cfg_path}: {e}") from None
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise MalsoriError(f"{path}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    load_trained(path, config, model, trained_tensors(model), f"this decoder-only model ({adapter.kind}, encoder "
                 f"{'frozen' if prefix.freeze_encoder else 'trained'})")
    return ModelDir(path, "asr", config, model.eval(), lm.tokenizer, fbank, cmvn)
