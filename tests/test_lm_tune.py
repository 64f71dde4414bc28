"""`malsori tune-lm` (malsori/tune_lm.py): test sets are refused by name; the coordinate search ends at a point no
worse than every point it decoded, whose WER/CER a separate decoding reproduces; the JSON holds the chosen weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from malsori.cli import main
from malsori.data.manifest import read_manifest
from malsori.data.select import load_waves
from malsori.decode.options import DecodeOptions
from malsori.evaluate import score_waves
from malsori.lm.ngram import NgramLM
from malsori.lm_scorers import lm_scorers
from malsori.pretrained import Recognizer, resolve_model
from malsori.tune_lm import TuneGrid, looks_like_test_set, tune_weights

DEMO = Path(__file__).resolve().parents[1] / "demo"


def test_test_sets_are_recognized_by_name(tmp_path) -> None:
    for path in ["corpus/test.jsonl", "data/kokoro_test.jsonl", "speechocean762_test_sample/manifest.jsonl",
                 "data/speech_commands_v002_testset.jsonl", "a/TEST-clean.jsonl"]:
        assert looks_like_test_set(tmp_path / path), path
    for path in ["corpus/dev.jsonl", "data/dev_real.jsonl", "latest/manifest.jsonl", "contest/dev.jsonl"]:
        assert not looks_like_test_set(tmp_path / path), path
    (tmp_path / "lm.arpa").write_text("")
    result = CliRunner().invoke(main, ["tune-lm", "en-small", str(tmp_path / "corpus" / "test.jsonl"),
                                       "--lm", str(tmp_path / "lm.arpa")])
    assert result.exit_code == 2 and "looks like a test set" in result.output, result.output


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    """Three demo recordings as a dev set (a folder of its own), and a word 2-gram on their transcripts' words."""
    if not (DEMO / "manifest.jsonl").is_file():
        pytest.skip("no demo recordings")
    folder = tmp_path_factory.mktemp("dev") / "dev"
    shutil.copytree(DEMO, folder)
    utts, waves, _ = load_waves(read_manifest(folder / "manifest.jsonl").utterances[:3])
    lm = NgramLM.train([u.text.lower().strip(".") for u in utts] + ["a concert in the evening"], order=2)
    lm.write_arpa(folder / "lm.arpa")
    return folder, utts, waves, lm


def test_the_search_ends_at_its_best_point(dev) -> None:
    folder, utts, waves, lm = dev
    rec = Recognizer.load(resolve_model("en-small"), "cpu")
    grid = TuneGrid(lm_weights=(0.3, 1.0), word_bonuses=(0.0, 2.0), rounds=2)
    result = tune_weights(rec, utts, waves, lm, grid, "beam", beam_size=2)
    tried = [r for r in result.rows if r is not result.no_lm]
    assert len(tried) >= 3 and result.best in tried
    assert all((result.best.wer, result.best.cer) <= (r.wer, r.cer) for r in tried)
    again = score_waves(rec, utts, waves, DecodeOptions("beam", 2, scorers=lm_scorers(lm, rec.tokenizer, result.best.lm_weight,
                                                                                       result.best.word_bonus)))
    assert (again.rates.wer, again.rates.cer) == (result.best.wer, result.best.cer)
    plain = score_waves(rec, utts, waves, DecodeOptions("beam", 2))
    assert (plain.rates.wer, plain.rates.cer) == (result.no_lm.wer, result.no_lm.cer)


def test_the_command_writes_the_chosen_weights(dev, tmp_path) -> None:
    folder = dev[0]
    out = tmp_path / "weights.json"
    result = CliRunner().invoke(main, ["tune-lm", "en-small", str(folder / "manifest.jsonl"), "--lm", str(folder / "lm.arpa"),
                                       "--lm-weights", "0.5", "--word-bonuses", "1,2", "--beam", "2", "--limit", "2",
                                       "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["lm_weight"] == 0.5 and record["word_bonus"] in (1.0, 2.0) and record["utterances"] == 2
    assert {(r["lm_weight"], r["word_bonus"]) for r in record["rows"]} == {(0.0, 0.0), (0.5, 1.0), (0.5, 2.0)}
    assert f"--word-bonus {record['word_bonus']:g}" in record["command"]
    bad = CliRunner().invoke(main, ["tune-lm", "en-small", str(folder / "manifest.jsonl"), "--lm", str(folder / "lm.arpa"),
                                    "--lm-weights", "x"])
    assert bad.exit_code == 2 and "--lm-weights" in bad.output


def test_lm_training_leaves_out_excluded_sentences(tmp_path) -> None:
    """`data.exclude` (text files or manifests): training lines that normalize to one of their sentences are dropped,
    and the recognizer's tokenizer is copied with `data.tokenizer_dir` (the GPT then scores its units)."""
    import torch

    from malsori.tasks import load_train_config
    from malsori.tasks.lm import TextLMTask

    (tmp_path / "train.txt").write_text("The cat sat.\nA dog ran!\nthe cat sat\nbirds sing\n")
    (tmp_path / "test.jsonl").write_text('{"id": "u1", "audio": "a.wav", "text": "THE CAT SAT"}\n')
    (tmp_path / "more.txt").write_text("birds sing\n")
    cfg = load_train_config(None, ["task=lm", f"out={tmp_path / 'run'}", f"data.train=[{tmp_path / 'train.txt'}]",
                                   f"data.exclude=[{tmp_path / 'test.jsonl'},{tmp_path / 'more.txt'}]",
                                   f"data.tokenizer_dir={resolve_model('en-small')}"])
    task = TextLMTask(cfg, tmp_path / "run", torch.device("cpu"), verbose=False)
    assert task.excluded_lines == 3 and task.train.lines == 1
    assert task.tokenizer.vocab_size == 31 and task.tokenizer.decode(task.train.tokens[1:-1]) == "a dog ran"
