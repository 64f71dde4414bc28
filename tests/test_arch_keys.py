"""Tensor names written by older versions still load: the Conformer's feed-forward branches were `ff1.net.{0,1,3}`
before the shared `FeedForward` (`ff1.{0,1,4}`); `malsori.nn.load.upgrade_keys` renames them on every read."""

from __future__ import annotations

import pytest
import torch

from malsori.config import from_dict
from malsori.models.registry import ModelConfig, build_model
from malsori.nn.load import load_state_dict_strict, upgrade_keys
from malsori.pretrained import RELEASED_MODELS, load_model_dir

OLD_TO_NEW = {"encoder.layers.0.ff1.net.0.weight": "encoder.layers.0.ff1.0.weight",
              "encoder.layers.3.ff2.net.1.bias": "encoder.layers.3.ff2.1.bias",
              "encoder.layers.12.ff1.net.3.weight": "encoder.layers.12.ff1.4.weight",
              "ff1.net.3.bias": "ff1.4.bias"}
KEPT = ["decoder.layers.0.ff.4.weight", "encoder.layers.0.conv.pointwise_in.weight", "head.weight", "x.net.3.weight",
        "encoder.layers.0.ff1.4.weight"]


def test_old_feed_forward_names_are_renamed_and_others_kept():
    state = {k: torch.zeros(1) for k in [*OLD_TO_NEW, *KEPT]}
    assert sorted(upgrade_keys(state)) == sorted([*OLD_TO_NEW.values(), *KEPT])


def small_conformer_ctc() -> torch.nn.Module:
    cfg = from_dict(ModelConfig, {"conformer": {"d_model": 16, "num_layers": 2, "num_heads": 2}})
    return build_model(cfg, 20, 9)


def test_a_state_with_old_names_loads_every_tensor():
    torch.manual_seed(0)
    saved = small_conformer_ctc().state_dict()
    old = {k.replace(".ff1.4.", ".ff1.net.3.").replace(".ff2.0.", ".ff2.net.0."): v for k, v in saved.items()}
    assert old.keys() != saved.keys()
    model = small_conformer_ctc()
    load_state_dict_strict(model, old, "old.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.skipif(not (RELEASED_MODELS / "en-small" / "model.safetensors").is_file(), reason="no released model")
def test_released_model_loads_every_saved_tensor_under_its_upgraded_name():
    from safetensors.torch import load_file

    saved = load_file(str(RELEASED_MODELS / "en-small" / "model.safetensors"))  # written before FeedForward (ff1.net.*)
    model = load_model_dir("en-small").model
    own = model.state_dict()
    assert own.keys() == upgrade_keys(saved).keys()
    for new, tensor in upgrade_keys(saved).items():
        assert torch.equal(own[new], tensor.to(own[new].dtype)), new
