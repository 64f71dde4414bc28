"""The experiment scripts of docs/mt: the encoder-only warm start (eng→kor from the eng→fra encoder) and the test sets
of either direction of a split parallel file."""

from __future__ import annotations

import pytest
import torch

from experiments.mt.encoder_init import keep_encoder
from experiments.mt.measure import test_set as measured_test_set
from experiments.mt.measure import words
from malsori.config import to_dict
from malsori.errors import MalsoriError
from malsori.mt.data import read_parallel
from malsori.mt.model import TransformerMTConfig, TranslatorConfig, build_translator
from malsori.mt.split import make_split, write_split
from malsori.pretrained import write_model_dir
from malsori.tokenizer import train_tokenizer
from malsori.train import warm_start

ROWS = ["I'm sorry.\tJe suis désolé.", "I'm sorry.\tDésolé.", "Run!\tCours !", "Run!\tCourez !", "Hello.\tBonjour.",
        "Thanks.\tMerci.", "Go.\tVa !", "Yes.\tOui.", "No.\tNon.", "Wait.\tAttends.", "I wait.\tAttends."]


def _translator(tok, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = TranslatorConfig(kind="transformer", transformer=TransformerMTConfig(d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2))
    return build_translator(cfg, tok.vocab_size)


def test_encoder_init_starts_the_encoder_and_shared_embedding_but_not_the_decoder(tmp_path):
    tok = train_tokenizer("char", [r.replace("\t", " ") for r in ROWS])
    trained, fresh = _translator(tok, 0), _translator(tok, 1)
    write_model_dir(tmp_path / "m", "mt", trained, {"model": to_dict(trained.mt_cfg)}, tok)
    names = keep_encoder(tmp_path / "m", tmp_path / "enc")
    assert "encoder.embed.weight" in names and all(n.startswith("encoder.") for n in names)
    assert warm_start(fresh, tmp_path / "enc") == len(names)
    new, old = fresh.state_dict(), trained.state_dict()
    assert all(torch.equal(new[n], old[n]) for n in names)
    assert fresh.decoder.embed.weight is fresh.encoder.embed.weight  # the shared matrix came along
    for n in ("decoder.layers.0.self_attention.qkv.weight", "decoder.layers.0.cross_attention.kv.weight"):
        assert not torch.equal(new[n], old[n])  # the decoder keeps its own (seed 1) start
    with pytest.raises(MalsoriError, match="no model.safetensors"):
        keep_encoder(tmp_path / "enc-missing", tmp_path / "x")


def test_reversed_test_set_takes_the_second_column_as_sources_with_all_their_references(tmp_path):
    data = tmp_path / "pairs.tsv"
    data.write_text("\n".join(ROWS) + "\n")
    pairs = read_parallel(data)
    split = make_split(pairs, set(), dev_sources=1, test_sources=4, seed=3)
    split_file = write_split(tmp_path / "split.tsv", split, data)
    forward, _ = measured_test_set(data, split_file)
    backward, counts = measured_test_set(data, split_file, reverse=True)
    assert {r for m in forward for r in m.references} == {m.source for m in backward}
    for m in backward:  # every English sentence translated by this French one is a reference
        assert sorted(m.references) == sorted(p.source for p in pairs if p.target == m.source)
    assert set(counts) == {w for p in split.select(pairs, "train") for w in words(p.target)}  # French training words


def test_cascade_speaks_each_source_once_and_keeps_the_audio_on_a_rerun(tmp_path):
    from experiments.mt.cascade import speak
    from malsori.audio import load_audio
    from malsori.data.tts.espeak import SynthParams, Voice

    paths = speak(["Come here.", "I'm hungry."], tmp_path, Voice("en-us"), SynthParams())
    assert [p.name for p in paths] == ["test0000.wav", "test0001.wav"]
    assert all(len(load_audio(p)) > 8000 for p in paths)  # at least half a second of 16 kHz speech
    stamp = paths[0].stat().st_mtime_ns
    assert speak(["Come here."], tmp_path, Voice("en-us"), SynthParams())[0].stat().st_mtime_ns == stamp
