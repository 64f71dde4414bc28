"""Decoder-only ASR through `malsori train` (task asr_llm) and its model folder: a tiny one overfits four recordings
from a speech model folder and a GPT folder, and the folder it writes transcribes them through `malsori.load` and
`malsori eval`; save → load gives the same search results; the folder holds only the trained tensors and refuses
a changed source."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import malsori
from malsori.cli import main
from malsori.config import to_dict
from malsori.decode.options import DecodeOptions
from malsori.errors import MalsoriError
from malsori.features import CMVNStats, Fbank, FbankConfig, GlobalCMVN
from malsori.lm.gpt import GPT, GPTConfig
from malsori.models.registry import LMConfig, ModelConfig, build_model
from malsori.nn.conformer import ConformerConfig
from malsori.pretrained import load_model_dir, save_model_dir, write_model_dir
from malsori.recipes import resolve_recipe
from malsori.tasks import load_train_config, task_class
from malsori.tokenizer import train_tokenizer
from malsori.train import train
from tests.helpers.llm import pretrain_on

TRANSCRIPTS = ["go left", "stop now", "turn right", "yes"]
RECIPE = resolve_recipe("llm/decoder_only_asr")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A tiny random Conformer-CTC speech folder, a GPT folder in its tokens (pretrained on the transcripts) and a
    manifest of four recordings (a different pair of tones each)."""
    root = tmp_path_factory.mktemp("asr_llm")
    torch.manual_seed(0)
    tok = train_tokenizer("char", TRANSCRIPTS)
    t = np.arange(12000) / 16000
    waves, lines = [], []
    for i, text in enumerate(TRANSCRIPTS):
        wave = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.2 * np.sin(2 * np.pi * (900 + 400 * i) * t * t)).astype(np.float32)
        sf.write(root / f"u{i}.wav", wave, 16000)
        waves.append(wave)
        lines.append(json.dumps({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": len(wave) / 16000}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    feat_cfg = FbankConfig()
    fbank, stats = Fbank(feat_cfg), CMVNStats(feat_cfg.num_mel_bins)
    for w in waves:
        stats.update(*fbank(torch.from_numpy(w)[None], torch.tensor([len(w)])))
    model_cfg = ModelConfig(conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, ff_expansion=2, conv_kernel=3,
                                                      dropout=0.0, subsampling_channels=8))
    speech = save_model_dir(root / "speech", build_model(model_cfg, 80, tok.vocab_size), model_cfg, feat_cfg, tok,
                            GlobalCMVN.from_stats(stats))
    lm_cfg = LMConfig(gpt=GPTConfig(d_model=48, num_layers=2, num_heads=2, dropout=0.0, context=128))
    gpt = GPT(lm_cfg.gpt, tok.vocab_size)
    pretrain_on(gpt, tok, TRANSCRIPTS)
    base = write_model_dir(root / "gpt", "lm", gpt, {"model": to_dict(lm_cfg), "normalize": True}, tok)
    return {"root": root, "speech": speech, "base": base, "manifest": root / "manifest.jsonl"}


def _overrides(s, out, *extra):
    return [f"encoder={s['speech']}", f"base={s['base']}", f"data.train={s['manifest']}", f"data.valid={s['manifest']}",
            "data.batch_size=4", f"out={out}", "prefix.stride=2", "prefix.hidden=64", "prompt=say",
            "adapter.lora_targets=[qkv,out,ff_in,ff_out]", "optim.lr=1e-2", "optim.warmup_steps=0", "optim.schedule=constant",
            "progress=false", "threads=1", *extra]


def test_a_tiny_decoder_only_asr_trains_through_the_cli_path_and_transcribes(sources, tmp_path):
    out = tmp_path / "run"
    model_dir = train(load_train_config(RECIPE, _overrides(sources, out, "max_steps=150", "max_epochs=200",
                                                                           "log_every=10", "checkpoint_every=1000")))
    losses = [float(r.split(",")[2]) for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert losses[-1] < 0.05 * losses[0]
    assert float((out / "valid.csv").read_text().splitlines()[-1].split(",")[3]) == 0.0  # CER of the last validation
    assert list((out / "cache").glob("train-encoder-*.safetensors"))  # the frozen encoder's outputs, cached
    rec = malsori.load(model_dir, device="cpu")
    wavs = [str(sources["root"] / f"u{i}.wav") for i in range(4)]
    assert [t.text for t in rec.transcribe(wavs)] == TRANSCRIPTS
    assert [t.text for t in rec.transcribe(wavs, DecodeOptions(method="beam", beam_size=3))] == TRANSCRIPTS
    res = CliRunner().invoke(main, ["eval", str(model_dir), str(sources["manifest"]), "--report", str(tmp_path / "r.tsv")])
    assert res.exit_code == 0, res.output
    assert "WER 0.00%" in res.output


def test_the_model_folder_holds_the_trained_tensors_and_reloads_to_the_same_search(sources, tmp_path):
    cfg = load_train_config(RECIPE, _overrides(sources, tmp_path / "run", "prefix.prompt_position=before"))
    task = task_class("asr_llm")(cfg, tmp_path / "run", torch.device("cpu"), verbose=False)
    torch.manual_seed(3)
    model = task.build_model()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))  # the LoRA B matrices start at zero: make every trained tensor matter
    path = task.save_model(tmp_path / "model", model.eval())
    loaded = load_model_dir(path)
    stored = json.loads((path / "config.json").read_text())
    with open(path / "model.safetensors", "rb") as f:
        names = set(json.loads(f.read(int.from_bytes(f.read(8), "little")))) - {"__metadata__"}
    assert names and all(n.startswith("projector.") or ".lora_" in n for n in names)
    assert stored["task"] == "asr_llm" and loaded.task == "asr"
    assert stored["prefix"]["prompt_position"] == loaded.model.cfg.prompt_position == "before"
    feats = torch.randn(2, 60, 80, generator=torch.Generator().manual_seed(0))
    lens = torch.tensor([60, 44])
    for options in (DecodeOptions(max_len=12), DecodeOptions(method="beam", beam_size=3, max_len=12)):
        ours, theirs = model.decode(feats, lens, options), loaded.model.decode(feats, lens, options)
        assert [h.tokens for h in ours] == [h.tokens for h in theirs]
        assert all(math.isclose(a.score, b.score, abs_tol=1e-5) for a, b in zip(ours, theirs))
    older = {**stored, "prefix": {k: v for k, v in stored["prefix"].items() if k != "prompt_position"}}
    (path / "config.json").write_text(json.dumps(older))
    assert load_model_dir(path).model.cfg.prompt_position == "after"  # a folder from before the option: prompt after the audio
    stored["base_weights_sha256"] = "0" * 64
    (path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(MalsoriError, match="base .* is not the model this one was trained on"):
        load_model_dir(path)
