"""The model-family comparison (experiments/compare, `python -m experiments.compare`): the whole pipeline in miniature (synthesize → train 7 families → evaluate → report), resuming,
the recipes' parameter budget, long-set bucketing and the report's plain-language findings."""

import itertools
import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.compare.config import DEFAULT_REAL, FAMILIES, RECIPES, CompareConfig, resolve_family
from experiments.compare.report import findings
from experiments.compare.sets import bucket_edges, bucket_of
from malsori.audio import audio_duration
from malsori.config import load_config
from malsori.data.manifest import read_manifest
from malsori.data.select import load_waves
from malsori.errors import ConfigError
from malsori.metrics import error_rates
from malsori.models.registry import build_model
from malsori.pretrained import Recognizer
from malsori.text import normalize
from malsori.train import TrainConfig

# Tiny sizes for every encoder/head section (a section a recipe does not use is ignored), 3 steps each.
TINY = ["model.conformer.d_model=32", "model.conformer.num_layers=1", "model.conformer.num_heads=2",
        "model.lstm.hidden_size=32", "model.lstm.num_layers=3",
        "model.transformer.d_model=32", "model.transformer.num_layers=1", "model.transformer.num_heads=2",
        "model.attention.d_model=32", "model.attention.num_layers=1", "model.attention.num_heads=2",
        "model.attention.hidden_size=32", "model.attention.embed_dim=16", "model.attention.attention_dim=16",
        "model.transducer.predictor.embed_dim=16", "model.transducer.predictor.hidden_size=32", "model.transducer.joiner_dim=32",
        "max_steps=3", "log_every=1", "batch.max_frames=4000", "checkpoint_every=1000"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_compare_end_to_end_then_resume(tmp_path, monkeypatch):
    import experiments.compare.run as compare_module
    from experiments.compare.run import main as compare

    corpus, out = tmp_path / "corpus", tmp_path / "cmp"
    args = ["--corpus", str(corpus), "--num-train", "60", "--out", str(out), "--minutes", "1", "--threads", "1",
            "--beam-size", "2", "--long-max-concat", "3", "--long-per-count", "3", "--long-min-bucket", "1",
            "--real-limit", "3", "--seed", "1"]
    args += [a for o in TINY for a in ("-o", o)]
    res = CliRunner().invoke(compare, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "synthesizing" in res.output  # the missing corpus was made first
    results = json.loads((out / "results.json").read_text())
    assert list(results["families"]) == list(FAMILIES)

    # every family left a model folder whose greedy output, decoded again here as the comparison batches it, scores
    # exactly the WER/CER the report gives it; the duration buckets add up to the whole set
    test_utts, test_waves, _ = load_waves(read_manifest(corpus / "test.jsonl").utterances)
    refs = [normalize(u.text) for u in test_utts]
    for name, fam in results["families"].items():
        rec = Recognizer.load(out / "runs" / name / "model", device="cpu")
        again = error_rates(refs, [t.text for t in rec.transcribe_waves(test_waves, batch_size=CompareConfig.batch_size)])
        g = fam["test"]["greedy"]
        assert (g["wer"], g["cer"], g["words"], g["utterances"]) == pytest.approx(
            (again.wer, again.cer, again.words, len(test_utts)), abs=1e-9), name
        assert fam["params"] == sum(p.numel() for p in rec.model.parameters()) > 0
        assert fam["train"]["steps"] == 3 and [c[0] for c in fam["train"]["curve"]] == [1, 2, 3]
        assert fam["train"]["final_loss"] == fam["train"]["curve"][-1][2]
        splits = ("test", "real") if DEFAULT_REAL.is_file() else ("test",)
        for split, method in itertools.product(splits, ("greedy", "beam")):
            r = fam[split][method]
            want = len(test_utts) if split == "test" else 3  # --real-limit 3
            assert r["utterances"] == want and r["words"] > 0 and r["rtf"] > 0, (name, split, method)
        for key, edges in (("long", results["long_set"]["edges"]), ("test", results["corpus"]["test_edges"])):
            buckets, whole = fam[key]["greedy"]["buckets"], fam[key]["greedy"]
            assert len(buckets) == len(edges) - 1 and all(b["utterances"] > 0 for b in buckets)
            assert sum(b["utterances"] for b in buckets) == whole["utterances"]
            assert sum(b["words"] for b in buckets) == whole["words"]
            errors = sum(b["substitutions"] + b["deletions"] + b["insertions"] for b in buckets)
            assert errors == pytest.approx(whole["wer"] * whole["words"], abs=1e-6), (name, key)

    # the long set: real FLAC files of joined same-voice utterances, going well beyond the training median
    ls, median = results["long_set"], results["corpus"]["train_median_s"]
    edges = ls["edges"]
    assert all(a < b for a, b in zip(edges, edges[1:])) and edges[0] == 0.0
    assert sum(ls["bucket_counts"]) == ls["utterances"] == 9 and min(ls["bucket_counts"]) > 0
    test_utts = {json.loads(line)["id"]: json.loads(line) for line in (corpus / "test.jsonl").read_text().splitlines()}
    long_utts = [json.loads(line) for line in (out / "long_test" / "manifest.jsonl").read_text().splitlines()]
    for u in long_utts:
        parts = [test_utts[i] for i in u["sources"]]
        assert len(parts) == u["parts"] and len({p["speaker"] for p in parts}) == 1
        assert u["text"] == " ".join(normalize(p["text"]) for p in parts) and u["first_text"] == normalize(parts[0]["text"])
        real = audio_duration(out / "long_test" / u["audio"])
        assert abs(real - u["duration"]) < 0.01 and real > sum(p["duration"] for p in parts) - 0.01
    durs = [u["duration"] for u in long_utts]
    assert max(durs) > 2 * median and ls["beyond_train_median"] >= 0.5
    for fam in results["families"].values():
        g = fam["long"]["greedy"]
        assert g["joined"] == sum(u["parts"] > 1 for u in long_utts) and 0 <= g["stopped_at_first_join"] <= g["joined"]

    # report and plots
    md = (out / "compare.md").read_text()
    assert "## What the numbers show" in md and f"`python -m experiments.compare --corpus {corpus} --out {out} --minutes 1.0" in md
    assert all(f"| {n} |" in md for n in FAMILIES)
    for png in ("error_vs_duration.png", "wer_by_family.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 5000 and f"]({png})" in md
        w, h = _png_size(out / png)
        assert w > 300 and h > 200

    # a rerun reuses the trained models and their cached scores
    stamps = {n: (out / "runs" / n / "model" / "model.safetensors").stat().st_mtime_ns for n in FAMILIES}
    res2 = CliRunner().invoke(compare, args, catch_exceptions=False)
    assert res2.exit_code == 0, res2.output
    assert res2.output.count("not retrained") == len(FAMILIES) and res2.output.count("evaluation cached") == len(FAMILIES)
    assert stamps == {n: (out / "runs" / n / "model" / "model.safetensors").stat().st_mtime_ns for n in FAMILIES}
    again = json.loads((out / "results.json").read_text())
    assert again["families"]["ctc_conformer"]["test"] == results["families"]["ctc_conformer"]["test"]

    # a family that fails at run time is reported and left out; the others still are compared
    train_family = compare_module.train_family

    def fails_for_transformer_aed(tcfg, retrain, log):
        if Path(tcfg.out).name == "transformer_aed":
            raise RuntimeError("out of memory (a stand-in run-time failure)")
        return train_family(tcfg, retrain, log)

    monkeypatch.setattr(compare_module, "train_family", fails_for_transformer_aed)
    args3 = args + ["--families", "ctc_conformer,transformer_aed"]
    res3 = CliRunner().invoke(compare, args3, catch_exceptions=False)
    assert res3.exit_code == 0, res3.output
    third = json.loads((out / "results.json").read_text())
    assert list(third["families"]) == ["ctc_conformer"] and "out of memory" in third["failed"]["transformer_aed"]
    assert "**transformer_aed failed**" in (out / "compare.md").read_text()
    # a bad key or value in the overrides is a config error before anything trains
    with pytest.raises(ConfigError, match="no_such_key"):
        CliRunner().invoke(compare, args + ["-o", "model.no_such_key=1"], catch_exceptions=False)
    with pytest.raises(ConfigError, match="model.transformer.num_heads 3 must divide d_model"):
        CliRunner().invoke(compare, args3 + ["-o", "model.transformer.num_heads=3"], catch_exceptions=False)


def test_recipes_have_matched_parameter_budgets():
    """Every family recipe (the default ones and the extra ctc_blstm) builds a model of 4.5–5.5 M parameters (char
    vocabulary of ~30 tokens)."""
    counts = {}
    for recipe in sorted(RECIPES.glob("*.yaml")):
        cfg = load_config(TrainConfig, recipe, [])
        model = build_model(cfg.model, cfg.features.num_mel_bins, 32)
        counts[recipe.stem] = sum(p.numel() for p in model.parameters())
    assert set(FAMILIES) <= set(counts) and "ctc_blstm" in counts
    assert all(4.5e6 <= n <= 5.5e6 for n in counts.values()), counts
    assert load_config(TrainConfig, RECIPES / "transformer_aed.yaml", []).model.attention.ctc_weight == 0.3


def test_bucket_edges_are_monotone_multiples_without_empty_buckets():
    durs = [1.0, 1.5, 5.2, 5.9, 11.0]  # nothing between 2 and 5 s, nor between 6 and 10 s
    edges = bucket_edges(2.0, durs)
    assert edges == [0.0, 2.0, 6.0, 12.0]
    counts = [sum(bucket_of(d, edges) == b for d in durs) for b in range(len(edges) - 1)]
    assert counts == [2, 2, 1]
    assert bucket_edges(2.0, durs, min_count=2) == [0.0, 2.0, 12.0]  # widened until each bucket holds 2
    assert bucket_edges(2.0, [4.0]) == [0.0, 4.0]  # a duration on the top edge is in the last (closed) bucket


def test_unknown_family_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="nope: no such recipe.*ctc_conformer"):
        resolve_family("nope")
    assert resolve_family("las_blstm") == RECIPES / "las_blstm.yaml"


def _results(fixed: tuple[float, float], las: tuple[float, float], best_test: float = 0.2,
             long: tuple[tuple[float, float], tuple[float, float]] | None = None) -> dict:
    """A minimal results dict: a fixed-vector, a LAS and a CTC family with given shortest/longest-bucket WERs on the
    test split (and on the long set: `long` = (fixed, las), else the same as on the test split)."""

    def buckets(short: float, long: float) -> dict:
        return {"buckets": [{"wer": short}, {"wer": (short + long) / 2}, {"wer": long}]}

    def fam(decoder: str, head: str, test_span: tuple[float, float], long_span: tuple[float, float], test: float) -> dict:
        return {"decoder": decoder, "head": head,
                "test": {"greedy": {"wer": test, "rtf": 0.01, **buckets(*test_span)}, "beam": {"wer": test * 0.9, "rtf": 0.02}},
                "long": {"greedy": buckets(*long_span)},
                "train": {"audio_sec_per_sec": 50.0, "steps": 100}}

    long_fixed, long_las = long or (fixed, las)
    return {"config": {"minutes": 20, "beam_size": 8}, "corpus": {"train_max_s": 8.0, "test_edges": [0.0, 1.5, 3.0, 4.5]},
            "long_set": {"edges": [0.0, 3.0, 6.0, 12.0], "beyond_train_max": 0.3},
            "families": {"fixed_lstm": fam("fixed", "attention", fixed, long_fixed, best_test + 0.2),
                         "las_blstm": fam("las", "attention", las, long_las, best_test + 0.1),
                         "ctc_conformer": fam("", "ctc", (0.2, 0.22), (0.2, 0.22), best_test)}}


def test_findings_say_plainly_whether_the_length_claim_holds():
    text = lambda r: "\n".join(findings(r))  # noqa: E731
    holds = text(_results(fixed=(0.2, 0.6), las=(0.2, 0.25)))
    assert "is **borne out**" in holds and "not borne out" not in holds and "cannot be tested" not in holds
    not_degrading = text(_results(fixed=(0.3, 0.32), las=(0.2, 0.25)))
    assert "**not borne out**" in not_degrading and "does not degrade" in not_degrading
    both = text(_results(fixed=(0.2, 0.6), las=(0.2, 0.7)))
    assert "**not borne out**" in both and "attention models degrade" in both
    assert "**cannot be tested**" in text(_results(fixed=(0.95, 0.97), las=(0.2, 0.25)))
    # read separately inside the training lengths (test split) and beyond them (long set)
    split = findings(_results(fixed=(0.2, 0.6), las=(0.02, 0.05), long=((0.2, 0.7), (0.02, 0.8))))
    inside = next(x for x in split if x.startswith("Inside the training lengths (test split), the claim"))
    beyond = next(x for x in split if x.startswith("On joined test utterances (long set), the claim"))
    assert "is **borne out**" in inside and "**not borne out**" in beyond and "lose their alignment" in beyond
    assert "drops words" not in "\n".join(split)  # no error counts given: nothing said about their kind
    r = _results(fixed=(0.2, 0.6), las=(0.02, 0.05), long=((0.2, 0.7), (0.02, 0.8)))
    r["families"]["las_blstm"]["long"]["greedy"]["buckets"][-1].update(substitutions=2, deletions=14, insertions=0, words=20)
    assert "las_blstm's errors in the longest bucket are 88% deletions (14 of 20" in "\n".join(findings(r))
    r["families"]["las_blstm"]["long"]["greedy"].update(joined=72, stopped_at_first_join=45)
    assert "stopped there for 45 of 72 joined inputs" in "\n".join(findings(r))
    r["families"]["las_blstm"]["long"]["greedy"].update(joined=72, stopped_at_first_join=10)
    assert "stopped there" not in "\n".join(findings(r))
    assert "All models are still poor" in text(_results(fixed=(0.2, 0.6), las=(0.2, 0.25), best_test=0.7))
    assert "All models are still poor" not in text(_results(fixed=(0.2, 0.6), las=(0.2, 0.25)))
