"""Adapters on a frozen GPT: the GPT's input-vector hook equals its token path; a soft prompt's positions are right
with the KV cache (cached generation = uncached); LoRA merged = unmerged; an adapter folder saves only its tensors and
reloads to identical outputs; training through `malsori train` (task: llm) leaves frozen parameters bit-identical."""

import json

import pytest
import torch
from safetensors.torch import load_file

from malsori.config import from_dict
from malsori.errors import ConfigError, MalsoriError
from malsori.llm.adapters import AdaptedLM, AdapterConfig, load_lm, save_adapter
from malsori.llm.lora import LoRALinear
from malsori.lm.generate import SamplingOptions, generate
from malsori.lm.gpt import GPT, GPTConfig
from malsori.pretrained import load_model_dir
from malsori.tasks import load_train_config
from malsori.train import train
from tests.helpers.llm import reverse_task, tiny_lm_dir


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(d_model=32, num_layers=2, num_heads=2, dropout=0.0, context=40), 19).eval()


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every trainable tensor random values (LoRA's B starts at zero, which would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_gpt_input_vectors_equal_the_token_path():
    model = _gpt()
    x = torch.randint(3, 19, (2, 11))
    torch.testing.assert_close(model.forward_embeddings(model.embed(x)), model(x), rtol=0, atol=0)
    a, ca = model.forward_cached(x, model.init_cache(2))
    b, cb = model.forward_cached_embeddings(model.embed(x), model.init_cache(2))
    assert torch.equal(a, b) and torch.equal(ca, cb)


@pytest.mark.parametrize("kind", ["prompt", "lora"])
def test_cached_generation_equals_the_uncached_forward(kind):
    model = AdaptedLM(_gpt(), AdapterConfig(kind=kind, prompt_length=5, lora_rank=2, lora_targets=["qkv", "out", "ff_in"]))
    _perturb(model)
    model.eval()
    x = torch.randint(3, 19, (3, 12))
    full = model(x)
    logits, cache = model.forward_cached(x[:, :4], model.init_cache(3))
    steps = [logits]
    for t in range(4, 12):
        logits, cache = model.forward_cached(x[:, t : t + 1], cache)
        steps.append(logits)
    assert cache.size(4) == 12 + model.prefix
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # greedy generation with the cache = greedy decoding by re-running the whole forward at each step
    prompt, eos = [2, 5, 7, 9], 2
    got = generate(model, prompt, eos, SamplingOptions(temperature=0, max_tokens=10))
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            tok = int(model(torch.tensor([seq]))[0, -1].argmax())
            if tok == eos:
                break
            seq.append(tok)
    assert got == seq[len(prompt):]
    if kind == "prompt":  # the prompt changes the outputs (its positions are really there)
        assert not torch.allclose(full, model.gpt(x), atol=1e-3)


def test_lora_starts_at_the_base_and_merges_exactly():
    base = _gpt()
    x = torch.randint(3, 19, (2, 9))
    before = base(x)
    model = AdaptedLM(base, AdapterConfig(kind="lora", lora_rank=3, lora_alpha=6.0, lora_targets=["qkv", "out", "ff_in", "ff_out"]))
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * 4
    assert torch.equal(model(x), before)  # B = 0 at the start
    assert set(model.trainable()) == {n for n, _ in model.named_parameters() if ".lora_" in n}
    _perturb(model)
    model.eval()
    unmerged = model(x)
    assert not torch.allclose(unmerged, before, atol=1e-3)
    model.merge()
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="merged"):
        save_adapter("unused", model, "unused", None)


@pytest.mark.parametrize("kind", ["prompt", "lora"])
def test_adapter_folder_reloads_to_identical_outputs(tmp_path, kind):
    base_dir = tiny_lm_dir(tmp_path / "base")
    base = load_model_dir(base_dir)
    model = AdaptedLM(base.model, AdapterConfig(kind=kind, prompt_length=4, lora_rank=2))
    _perturb(model)
    model.eval()
    folder = save_adapter(tmp_path / "adapter", model, base_dir, base.tokenizer)
    saved = load_file(str(folder / "model.safetensors"))
    assert set(saved) == set(model.trainable())
    assert sum(v.numel() for v in saved.values()) < sum(p.numel() for p in base.model.parameters()) / 4
    again = load_lm(folder)
    x = torch.randint(3, base.tokenizer.vocab_size, (2, 13))
    assert again.task == "lm" and torch.equal(again.model(x), model(x))
    from click.testing import CliRunner

    from malsori.cli import main

    (tmp_path / "text.txt").write_text("abc cab\nbad dab ace\n")
    r = CliRunner().invoke(main, ["lm", "eval", str(folder), str(tmp_path / "text.txt"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["ppl_token"] > 1, r.output
    other = tiny_lm_dir(tmp_path / "other", seed=5)  # another base under the recorded path: refused
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "base": str(other)}))
    with pytest.raises(MalsoriError, match="not the one the adapter was trained on"):
        load_lm(folder)


def _tune(tmp_path, kind: str, **extra) -> tuple:
    base_dir = tiny_lm_dir(tmp_path / "base")
    task = reverse_task(tmp_path / "task")
    overrides = [f"base={base_dir}", f"data.tasks=[{task}]", f"adapter.kind={kind}", f"out={tmp_path / kind}",
                 "adapter.prompt_length=3", "adapter.lora_rank=2", "data.batch_size=8", "data.shots=1", "data.valid_items=3",
                 "max_steps=6", "checkpoint_every=3", "average_last=1", "progress=false", "optim.lr=0.01", "optim.warmup_steps=1",
                 "data.max_output_tokens=4", *[f"{k}={v}" for k, v in extra.items()]]
    cfg = load_train_config(None, ["task=llm", *overrides])
    return base_dir, cfg, train(cfg)


@pytest.mark.parametrize("kind", ["lora", "prompt"])
def test_training_an_adapter_leaves_the_base_bit_identical(tmp_path, kind):
    base_dir, cfg, out = _tune(tmp_path, kind)
    base = load_file(str(base_dir / "model.safetensors"))
    ckpt = load_file(str(sorted((tmp_path / kind).glob("ckpt-*"))[-1] / "model.safetensors"))
    for name, tensor in base.items():
        assert torch.equal(ckpt[f"gpt.{name}"], tensor), name  # frozen: bit for bit
    adapter = load_file(str(out / "model.safetensors"))
    assert adapter and all(torch.equal(v, ckpt[k]) for k, v in adapter.items())
    init = AdaptedLM(load_model_dir(base_dir).model, from_dict(AdapterConfig, {"kind": kind, "prompt_length": 3, "lora_rank": 2}))
    assert any(not torch.equal(v, init.trainable()[k]) for k, v in adapter.items())  # and the adapter did train
    assert (out / "config.json").is_file() and json.loads((out / "config.json").read_text())["task"] == "adapter"
    rows = (tmp_path / kind / "valid.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "step", "error", "loss", "items"] and len(rows) >= 2
    assert load_lm(out).model.cfg.kind == kind


def test_full_fine_tuning_writes_a_whole_lm_folder(tmp_path):
    base_dir, cfg, out = _tune(tmp_path, "full", **{"data.instruction": "true"})
    tuned, base = load_model_dir(out), load_model_dir(base_dir)
    assert tuned.task == "lm" and tuned.config["model"] == base.config["model"]
    assert any(not torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(), base.model.state_dict().values()))


def test_lora_on_q_and_v_only_leaves_k_alone_and_merges_exactly():
    """Hu et al.'s choice on a fused projection: separate rank-r updates of the q and v thirds; k's rows untouched."""
    torch.manual_seed(0)
    base = _gpt()
    x = torch.randint(3, 19, (2, 9))
    model = AdaptedLM(base, AdapterConfig(kind="lora", lora_rank=2, lora_targets=["q", "v"]))
    layer = next(m for m in model.modules() if isinstance(m, LoRALinear))
    d = layer.in_features
    assert layer.lora_a.shape == (2 * 2, d) and layer.lora_b.shape == (2 * d, 2)  # two parts, rank 2 each
    _perturb(model)
    h = torch.randn(5, d)
    with torch.no_grad():
        delta = layer(h) - torch.nn.functional.linear(h, layer.weight, layer.bias)
    assert delta[:, d : 2 * d].abs().max() == 0  # k unchanged
    assert delta[:, :d].abs().max() > 0 and delta[:, 2 * d :].abs().max() > 0
    # each part is its own rank-2 update: q's delta is rank ≤ 2 and differs from v's
    assert torch.linalg.matrix_rank(delta[:, :d]) <= 2
    model.eval()
    unmerged = model(x)
    model.merge()
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("targets", [["qkv", "q"], ["q", "q"], ["qk"]])
def test_bad_lora_targets_are_one_config_error(targets):
    with pytest.raises(ConfigError, match="lora_targets"):
        AdapterConfig(kind="lora", lora_targets=targets)
