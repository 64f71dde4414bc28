"""A pretrained GPT adapted on plain text (`task: lm` with `base` + `adapter`): trains through `malsori train` from
the domain recipes, loss falls, the frozen base stays bit-identical, the adapter folder reloads to identical scores,
and LM fusion takes the adapter folder (`--lm`), its scorer equal to the adapted GPT; bad configs are one line."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from malsori.cli import main
from malsori.decode.ctc import ctc_prefix_beam_search
from malsori.errors import MalsoriError
from malsori.llm.adapters import AdaptedLM, load_lm
from malsori.lm_scorers import load_gpt_scorer, lm_scorers
from malsori.pretrained import load_model_dir, write_model_dir
from malsori.recipes import resolve_recipe
from malsori.tasks import load_train_config
from malsori.tasks.lm import TextLMTask
from malsori.train import train
from tests.helpers.llm import pretrain_on, tiny_lm_dir

LINES = ["the lobster is a large marine crustacean", "the typhoon passed to the north of the island",
         "ash fell on the island and flights were cancelled", "the film is presumed lost", "a storm formed in the east"]
GENERAL = ["i think you are right", "can you help me", "we went home early", "she likes green tea", "it is late now"]


def _base(path):
    """A stand-in for the pretrained fusion GPT: a tiny character GPT that has seen general text (not the domain's)."""
    folder = tiny_lm_dir(path, context=32)
    m = load_model_dir(folder)
    pretrain_on(m.model, m.tokenizer, GENERAL)
    return write_model_dir(folder, "lm", m.model, {"model": m.config["model"], "normalize": False}, m.tokenizer)


def _adapt(tmp_path, kind: str, steps: int = 24):
    base_dir = _base(tmp_path / "base")
    text = tmp_path / "in_domain.txt"
    text.write_text("\n".join(LINES * 4) + "\n")
    recipe = "lm/gpt_domain_lora" if kind != "prompt" else "lm/gpt_domain_prompt"
    overrides = [f"base={base_dir}", f"data.train=[{text}]", f"out={tmp_path / kind}", "data.batch_size=4",
                 f"max_steps={steps}", "checkpoint_every=12", "valid_every=0", "log_every=4", "progress=false",
                 "adapter.prompt_length=4", "adapter.lora_rank=2", "optim.warmup_steps=2", "optim.schedule=constant"]
    if kind == "full":
        overrides += ["adapter.kind=full", "optim.lr=1e-2"]
    cfg = load_train_config(resolve_recipe(recipe), overrides)
    return base_dir, train(cfg)


@pytest.mark.parametrize("kind", ["prompt", "lora"])
def test_an_adapter_trains_on_plain_text_and_leaves_the_base_bit_identical(tmp_path, kind):
    base_dir, out = _adapt(tmp_path, kind)
    with open(tmp_path / kind / "log.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert losses[-1] < losses[0] - 0.1, losses  # the loss falls
    base = load_file(str(base_dir / "model.safetensors"))
    ckpt = load_file(str(sorted((tmp_path / kind).glob("ckpt-*"))[-1] / "model.safetensors"))
    for name, tensor in base.items():
        assert torch.equal(ckpt[f"gpt.{name}"], tensor), name  # frozen: bit for bit
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "adapter" and config["adapter"]["kind"] == kind and config["normalize"] is False
    saved = load_file(str(out / "model.safetensors"))
    assert saved and all(torch.equal(v, ckpt[k]) for k, v in saved.items())  # only the trained tensors
    # the adapter folder reloads to identical scores, and they differ from the base's
    m, again = load_lm(out), load_lm(out)
    x = torch.randint(3, m.tokenizer.vocab_size, (2, 20))
    assert isinstance(m.model, AdaptedLM) and torch.equal(m.model(x), again.model(x))
    assert not torch.allclose(m.model(x), load_model_dir(base_dir).model(x), atol=1e-4)


def test_full_fine_tuning_on_plain_text_writes_a_whole_lm_folder(tmp_path):
    base_dir, out = _adapt(tmp_path, "full", steps=12)
    tuned, base = load_model_dir(out), load_model_dir(base_dir)
    assert tuned.task == "lm" and tuned.config["model"] == base.config["model"]
    assert tuned.tokenizer.vocab_size == base.tokenizer.vocab_size and tuned.config["normalize"] is False
    assert any(not torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(), base.model.state_dict().values()))


@pytest.mark.parametrize("kind", ["prompt", "lora"])
def test_fusion_with_an_adapter_folder_scores_as_the_adapted_gpt(tmp_path, kind):
    _, out = _adapt(tmp_path, kind, steps=12)
    m = load_lm(out)
    tok = m.tokenizer
    scorer = load_gpt_scorer(out, tok)
    assert (scorer.pinned == 4) == (kind == "prompt")
    # step by step, prefixes of different lengths batched together = the adapted GPT's full forward after eos
    eos = tok.special_ids.eos
    seqs = [tok.encode("the film"), tok.encode("a storm formed"), tok.encode("ash")]
    with torch.no_grad():
        full = [m.model(torch.tensor([[eos] + y]))[0].log_softmax(-1) for y in seqs]
    state = scorer.init_state(len(seqs))
    for t in range(max(map(len, seqs)) + 1):
        log_probs, state = scorer.score(state)
        for i, y in enumerate(seqs):
            if t <= len(y):
                torch.testing.assert_close(log_probs[i], full[i][t], atol=1e-5, rtol=1e-5)
        state = scorer.extend(state, torch.arange(len(seqs)), torch.tensor([y[t] if t < len(y) else eos for y in seqs]))
    # n-best rescoring's one-pass scores agree with the full forward too
    whole = scorer.sequence_logprobs(seqs, eos)
    for i, y in enumerate(seqs):
        target = torch.tensor(y + [eos])
        expected = full[i][torch.arange(len(y) + 1), target].double().sum()
        torch.testing.assert_close(whole[i], expected, atol=1e-4, rtol=1e-5)
    # fusion in the CTC prefix beam search runs; its "lm" score is the adapted GPT's log-probability of the output
    torch.manual_seed(0)
    log_probs = torch.randn(1, 30, tok.vocab_size).log_softmax(-1)
    fused = lm_scorers(scorer, tok, weight=0.5)
    best = ctc_prefix_beam_search(log_probs, torch.tensor([30]), 4, scorers=fused)[0]
    ids = list(best.tokens)
    with torch.no_grad():
        lp = m.model(torch.tensor([[eos] + ids]))[0].log_softmax(-1)
    expected = float(lp[torch.arange(len(ids) + 1), torch.tensor(ids + [eos])].sum())
    assert best.scores["lm"] == pytest.approx(expected, abs=1e-3)


def test_bad_adapter_configs_are_one_line_errors_naming_the_field(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(LINES) + "\n")
    cfg = load_train_config(resolve_recipe("lm/gpt_domain_prompt"), ["base=", f"data.train=[{text}]"])
    with pytest.raises(MalsoriError, match=r"^adapter: needs base"):
        TextLMTask(cfg, tmp_path / "a", torch.device("cpu"), verbose=False)
    (tmp_path / "not_a_model").mkdir()
    cfg = load_train_config(resolve_recipe("lm/gpt_domain_prompt"), [f"base={tmp_path / 'not_a_model'}", f"data.train=[{text}]"])
    with pytest.raises(MalsoriError, match=r"^base: .*not a malsori model folder"):
        TextLMTask(cfg, tmp_path / "b", torch.device("cpu"), verbose=False)
    from click.testing import CliRunner

    r = CliRunner().invoke(main, ["train", "lm/gpt_domain_lora", f"base={tmp_path / 'not_a_model'}",
                                  f"data.train=[{text}]", f"out={tmp_path / 'c'}"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "base:" in r.output, r.output


def test_transcribe_with_an_adapter_folder_as_the_lm(tmp_path):
    """`malsori transcribe en-small REC --lm ADAPTER_FOLDER`: a soft prompt on a GPT in en-small's units, end to end."""
    from click.testing import CliRunner

    from malsori.config import to_dict
    from malsori.llm.adapters import AdapterConfig, save_adapter
    from malsori.lm.gpt import GPT, GPTConfig
    from malsori.models.registry import LMConfig
    from malsori.pretrained import resolve_model
    from malsori.tokenizer import load_tokenizer

    released = resolve_model("en-small")
    recordings = sorted((released.parents[1] / "demo" / "audio").glob("*.ogg"))
    if not recordings:
        pytest.skip("no demo recording")
    tok = load_tokenizer(released)
    torch.manual_seed(0)
    cfg = LMConfig(kind="gpt", gpt=GPTConfig(d_model=32, num_layers=2, num_heads=2, dropout=0.0, context=48))
    base = write_model_dir(tmp_path / "gpt", "lm", GPT(cfg.gpt, tok.vocab_size), {"model": to_dict(cfg), "normalize": True}, tok)
    adapted = AdaptedLM(load_model_dir(base).model, AdapterConfig(kind="prompt", prompt_length=3))
    folder = save_adapter(tmp_path / "adapter", adapted, base, tok)
    r = CliRunner().invoke(main, ["transcribe", "en-small", str(recordings[0]), "--method", "beam", "--beam", "2",
                                  "--lm", str(folder), "--lm-weight", "0.3", "--device", "cpu"])
    assert r.exit_code == 0 and r.output.strip(), r.output
