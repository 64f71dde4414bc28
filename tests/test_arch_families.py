"""Tagged model configs (#11 item 2): every shipped recipe's model section is its tags plus the chosen families'
sections, each its class's defaults overlaid with the recipe's values; model folders written with every section
still load and build the same model; a family defined only here (its own settings dataclass and builder) trains
from a recipe through `malsori train`'s loop and its folder reloads; config mistakes are one line naming
`model.<path>`."""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from malsori.config import bounded, from_dict, to_dict
from malsori.errors import ConfigError
from malsori.models.registry import ENCODERS, HEADS, LMS, LMConfig, ModelConfig, build_model, register_encoder
from malsori.mt.model import TranslatorConfig
from malsori.mt.registry import TRANSLATORS
from malsori.pretrained import load_model_dir
from malsori.recipes import known_recipes, resolve_recipe
from malsori.tasks import load_train_config
from malsori.train import train

ROOT = Path(__file__).resolve().parents[1]
RECIPE_FILES = [resolve_recipe(n) for n in known_recipes()] + sorted((ROOT / "recipes").rglob("*.yaml"))
TAGGED = {ModelConfig: {"encoder": ENCODERS, "head": HEADS}, LMConfig: {"kind": LMS}, TranslatorConfig: {"kind": TRANSLATORS}}


def _overlay(base: dict, values: dict) -> dict:
    """`base` with `values` written over it, recursively (a recipe section over its class's defaults)."""
    out = copy.deepcopy(base)
    for k, v in values.items():
        out[k] = _overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_writes_its_tags_and_only_the_chosen_sections(path: Path) -> None:
    cfg = load_train_config(path, [])
    if not hasattr(cfg, "model"):
        pytest.skip("a prompted fine-tuning run: its model is a base folder")
    raw = (yaml.safe_load(path.read_text()) or {}).get("model", {})
    tags = TAGGED[type(cfg.model)]
    written = to_dict(cfg.model)
    chosen = {tags[t][written[t]] for t in tags}
    for fam in chosen:
        if fam.config_class is not None:  # defaults of the family's own class, overlaid with the recipe's values
            expected = _overlay(to_dict(fam.config_class()), raw.get(fam.section, {}))
            assert written.pop(fam.section) == json.loads(json.dumps(expected)), fam.name
    unused = {f.section for reg in tags.values() for f in reg.values()} - {f.section for f in chosen}
    assert not unused & set(written), (path, unused & set(written))
    assert from_dict(type(cfg.model), to_dict(cfg.model), "model") == cfg.model  # written, it reads back the same


def test_a_folder_written_with_every_section_loads_the_same_model(tmp_path: Path) -> None:
    old = {"encoder": "conformer", "head": "ctc", "conformer": {"d_model": 16, "num_layers": 1, "num_heads": 2},
           "lstm": {"hidden_size": 8}, "transformer": {"d_model": 32, "num_heads": 2},
           "attention": {"decoder": "las"}, "transducer": {"joiner_dim": 8}}  # what folders held before #11 item 2
    cfg = from_dict(ModelConfig, old, "model")
    assert set(to_dict(cfg)) == {"encoder", "head", "conformer"} and cfg.lstm.hidden_size == 8
    assert cfg == from_dict(ModelConfig, to_dict(cfg), "model")
    torch.manual_seed(0)
    a = build_model(cfg, 20, 9)
    torch.manual_seed(0)
    b = build_model(from_dict(ModelConfig, to_dict(cfg), "model"), 20, 9)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    released = json.loads((ROOT / "models" / "en-small" / "config.json").read_text())["model"]
    assert {"lstm", "attention", "transducer"} <= set(released)  # the shipped folder holds every section ...
    assert set(to_dict(from_dict(ModelConfig, released, "model"))) == {"encoder", "head", "conformer"}  # ... and loads


# ---- a family that exists only in this test ---------------------------------------------------------------------
@dataclass
class PoolConfig:
    """Settings of the toy encoder."""

    hidden: int = bounded(24, ge=1)  # output channels
    stride: int = bounded(2, ge=1, le=8)  # frames averaged into one output frame


class PoolEncoder(torch.nn.Module):
    """Linear → ReLU per frame, then the mean of each `stride` frames: features [B, T, F] → [B, T/stride, hidden]."""

    def __init__(self, cfg: PoolConfig, input_dim: int) -> None:
        super().__init__()
        self.proj, self.stride, self.output_dim = torch.nn.Linear(input_dim, cfg.hidden), cfg.stride, cfg.hidden

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = feats.size(1) // self.stride * self.stride
        x = torch.relu(self.proj(feats[:, :t]))
        return x.unflatten(1, (-1, self.stride)).mean(2), lengths // self.stride


@pytest.fixture
def pool_family():
    register_encoder("pool", PoolConfig)(PoolEncoder)
    yield
    ENCODERS.pop("pool")


def _tones(folder: Path) -> Path:
    """Eight short utterances: "a" is a 300 Hz tone, "b" 1200 Hz, "ab" one then the other (16 kHz WAV + manifest)."""
    folder.mkdir()
    rate, rows = 16000, []
    t = np.arange(int(0.3 * rate)) / rate
    tone = {"a": np.sin(2 * np.pi * 300 * t), "b": np.sin(2 * np.pi * 1200 * t)}
    for i, text in enumerate(["a", "b", "ab", "ba"] * 2):
        wave = 0.3 * np.concatenate([tone[c] for c in text]) + 0.01 * np.random.default_rng(i).standard_normal(len(t) * len(text))
        sf.write(folder / f"{i}.wav", wave.astype(np.float32), rate)
        rows.append({"id": f"u{i}", "audio": str(folder / f"{i}.wav"), "text": text, "speaker": f"s{i % 2}",
                     "duration": len(wave) / rate})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl"


def test_a_family_defined_in_a_test_trains_from_a_recipe(pool_family, tmp_path: Path) -> None:
    recipe = {"out": str(tmp_path / "run"), "data": {"train": str(_tones(tmp_path / "data")), "tokenizer": "char"},
              "model": {"encoder": "pool", "head": "ctc", "pool": {"hidden": 32, "stride": 4}},
              "specaug": {"num_freq_masks": 0, "num_time_masks": 0}, "batch": {"max_frames": 2000},
              "optim": {"lr": 1e-2, "warmup_steps": 1, "schedule": "constant"}, "max_steps": 40, "max_epochs": 100,
              "log_every": 1, "checkpoint_every": 40, "average_last": 1, "progress": False, "threads": 1}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(recipe))
    cfg = load_train_config(tmp_path / "pool.yaml", [])
    assert cfg.model.pool == PoolConfig(32, 4)
    train(cfg)
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    folder = load_model_dir(tmp_path / "run" / "model")
    written = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]
    assert written == {"encoder": "pool", "pool": {"hidden": 32, "stride": 4}, "head": "ctc"}
    assert isinstance(folder.model.encoder, PoolEncoder) and folder.model.encoder.stride == 4


@pytest.mark.parametrize("override, message", [
    ("model.pool.stride=9", r"^model\.pool\.stride must be in \[1, 8\], got 9$"),
    ("model.pool.width=3", r"^unknown config key 'model\.pool\.width' \(known: hidden, stride\)$"),
    ("model.poool.stride=2", r"^unknown config key 'model\.poool' \(known: attention, conformer, encoder, head, lstm, pool, transducer, transformer\)$"),
    ("model.encoder=pol", r"^model\.encoder: unknown encoder 'pol' \(known: conformer, lstm, pool, transformer\)$"),
    ("model.head=pool", r"^model\.head: unknown head 'pool' \(known: attention, ctc, transducer\)$"),
    ("model.pool=[1]", r"^model\.pool: expected a mapping, got \[1\]$"),
])
def test_config_mistakes_are_one_line_naming_the_model_path(pool_family, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, ["model.encoder=pool", override])


def test_lm_and_translator_tags_name_their_path() -> None:
    with pytest.raises(ConfigError, match=r"^model\.kind: unknown language model 'rnn' \(known: gpt\)$"):
        load_train_config(None, ["task=lm", "model.kind=rnn"])
    with pytest.raises(ConfigError, match=r"^unknown config key 'model\.lstm' \(known: gpt, kind\)$"):
        load_train_config(None, ["task=lm", "model.lstm.hidden_size=3"])
    cfg = load_train_config(None, ["task=mt", "model.kind=attention", "model.rnn.hidden_size=8"])
    assert to_dict(cfg.model)["rnn"]["hidden_size"] == 8 and "transformer" not in to_dict(cfg.model)
    old = {"kind": "fixed", "rnn": {"hidden_size": 8}, "transformer": {"d_model": 32, "num_heads": 2}, "label_smoothing": 0.0}
    cfg = from_dict(TranslatorConfig, old, "model")  # a translation folder written before: both sections
    assert to_dict(cfg) == {"kind": "fixed", "rnn": to_dict(cfg.rnn), "share_embeddings": True, "label_smoothing": 0.0,
                            "max_len_ratio": 2.0, "normalize_length": True} and cfg.rnn.hidden_size == 8
    with pytest.raises(ConfigError, match=r"^model\.transformer\.num_heads must be >= 1, got 0$"):
        from_dict(TranslatorConfig, {**old, "transformer": {"num_heads": 0}}, "model")  # unused, still checked


def test_sections_read_and_write_as_attributes() -> None:
    cfg = ModelConfig()
    cfg.conformer.d_model = 48  # a default section, changed in place, is the one written
    cfg.lstm = from_dict(type(cfg.lstm), {"hidden_size": 7})
    assert to_dict(cfg)["conformer"]["d_model"] == 48 and "lstm" not in to_dict(cfg) and cfg.lstm.hidden_size == 7
    cfg.encoder = "lstm"
    assert to_dict(cfg)["lstm"]["hidden_size"] == 7 and "conformer" not in to_dict(cfg)
    with pytest.raises(AttributeError):
        cfg.ctc  # noqa: B018  (the CTC head has no settings)
    with pytest.raises(TypeError, match="unexpected keyword argument 'gpt'"):
        ModelConfig(gpt={})
