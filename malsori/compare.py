"""Train every model family on one corpus with the same wall-clock budget, then measure and report them side by side.

Accuracy (greedy and beam) on the held-out test split, error rate against utterance length on a long-utterance set
made by joining test utterances of one voice, training throughput, decoding speed, and the same metrics on real
speech. Writes OUT/compare.md (tables, plain-language findings), OUT/results.json (every number) and PNG plots.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import math
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from malsori.audio import SAMPLE_RATE, save_audio
from malsori.checkpoint import list_checkpoints
from malsori.config import bounded, load_config, to_dict
from malsori.data.dataset import load_utterance_audio
from malsori.data.manifest import Utterance, read_manifest, write_manifest
from malsori.decode.options import DecodeOptions
from malsori.errors import AudioError, ConfigError, MalsoriError
from malsori.metrics import error_rates
from malsori.pretrained import Recognizer
from malsori.provenance import git_commit, machine
from malsori.text import normalize
from malsori.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "compare"
FAMILIES = ("ctc_conformer", "fixed_lstm", "las_blstm", "transformer_aed", "conformer_aed", "rnnt_lstm", "conformer_transducer")
DEFAULT_REAL = ROOT.parent / "shared" / "data" / "speechocean762_test_sample" / "manifest.jsonl"
SPLITS = ("train", "dev", "test")

# Thresholds of the report's plain-language findings (absolute error-rate differences, 0..1).
UNLEARNED_WER = 0.9  # a model whose shortest-bucket WER is at least this has not learned enough to test length effects
DEGRADES = 0.10  # a WER rise from the shortest to the longest bucket of at least this counts as "degrades with length"
POOR_WER = 0.5  # if the best test WER is above this, every family is "still poor at this budget"
# The two sets error rate is read against length on: set key → how the report names it.
LENGTH_SETS = {"test": "inside the training lengths (test split)", "long": "on joined test utterances (long set)"}


@dataclass
class CompareConfig:
    """One comparison run: which families, what budget, how to evaluate, where to write."""

    corpus: str = "corpus"  # folder with train.jsonl, dev.jsonl, test.jsonl (e.g. made by `malsori data synth`)
    out: str = "exp/compare"  # report folder: compare.md, results.json, *.png, runs/<family>/, long_test/
    families: list[str] = field(default_factory=lambda: list(FAMILIES))  # recipe paths or names in recipes/compare/
    minutes: float = bounded(20.0, ge=0)  # wall-clock training budget per family (train's max_minutes)
    threads: int = bounded(2, ge=1)  # torch CPU threads for training and decoding, the same for every family
    device: str = "auto"  # training and decoding device: auto | cpu | cuda | cuda:N
    seed: int = bounded(0, ge=0)  # training seed of every family and the long-set selection
    overrides: list[str] = field(default_factory=list)  # key=value applied to every recipe last (tiny sizes, max_steps …)
    retrain: bool = False  # retrain families whose model folder already exists
    beam_size: int = bounded(8, ge=1)  # beam width of every "beam" measurement
    batch_size: int = bounded(8, ge=1)  # utterances decoded together
    test_limit: int = bounded(0, ge=0)  # evaluate on at most this many test utterances, evenly spaced (0 = all)
    long_max_concat: int = bounded(6, ge=1)  # the long set joins 1, 2, … this many test utterances of one voice
    long_per_count: int = bounded(24, ge=1)  # long-set utterances made for each number of joined utterances
    long_gap: float = bounded(0.15, ge=0)  # seconds of silence inserted between joined utterances
    long_min_bucket: int = bounded(5, ge=1)  # duration buckets (long set and test split) are widened until each holds this many utterances
    long_beam: bool = False  # also beam-search the long set (slow for attention decoders on long inputs)
    real_manifest: str = str(DEFAULT_REAL)  # real-speech manifest; skipped when absent or ""
    real_limit: int = bounded(200, ge=0)  # evenly spaced real-speech utterances to evaluate (0 = skip)


# -- inputs ---------------------------------------------------------------------------------------------------------
def resolve_family(name: str) -> Path:
    """A recipe path, or a family name in recipes/compare/."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = RECIPES / f"{name.removesuffix('.yaml')}.yaml"
    if not cand.is_file():
        known = ", ".join(sorted(f.stem for f in RECIPES.glob("*.yaml")))
        raise ConfigError(f"families: no recipe '{name}' (a .yaml path or one of: {known})")
    return cand


def corpus_manifests(corpus: str | Path) -> dict[str, Path]:
    """split → manifest path of a corpus folder; a missing split is an error naming the file."""
    paths = {s: Path(corpus) / f"{s}.jsonl" for s in SPLITS}
    for s, p in paths.items():
        if not p.is_file():
            raise MalsoriError(f"{p}: {s} manifest not found (the corpus folder needs train.jsonl, dev.jsonl, test.jsonl)")
    return paths


def synthesize_missing_corpus(corpus: str | Path, num_train: int, seed: int, progress: bool = True) -> dict[str, Path]:
    """Synthesize a corpus into `corpus` (num_train train utterances, a tenth as many dev and test, at least 10 each);
    test voices are limited so that each has several utterances to join into long ones."""
    from malsori.data.synth import SynthConfig, synthesize_corpus

    held = max(10, num_train // 10)
    voices = min(12, max(2, held // 8))
    cfg = SynthConfig(num_train=num_train, num_dev=held, num_test=held, dev_voices=voices, test_voices=voices, seed=seed)
    synthesize_corpus(cfg, corpus, progress=progress)
    return corpus_manifests(corpus)


def evenly_spaced(items: list, n: int) -> list:
    """At most n items spread evenly over the list (all of them if n is 0 or covers it)."""
    if n <= 0 or len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# -- the long-utterance set ---------------------------------------------------------------------------------------
def build_long_set(test: Path, folder: Path, max_concat: int, per_count: int, gap: float, seed: int) -> list[Utterance]:
    """Join 1..max_concat consecutive test utterances of one voice (texts joined) into FLAC files + folder/manifest.jsonl.

    Groups never reuse an utterance within one count; which groups are kept (per_count per count) is a seeded draw.
    A finished set with the same settings is reused.
    """
    manifest = folder / "manifest.jsonl"
    settings = {"test": str(Path(test).resolve()), "max_concat": max_concat, "per_count": per_count, "gap": gap, "seed": seed,
                "format": 2}  # 2: records carry first_text
    stamp = folder / "settings.json"
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return read_manifest(manifest).utterances
    by_voice: dict[str, list[Utterance]] = {}
    for u in read_manifest(test).utterances:
        by_voice.setdefault(u.speaker, []).append(u)
    rng = random.Random(seed)
    silence = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
    out: list[Utterance] = []
    for k in range(1, max_concat + 1):
        groups = [us[i : i + k] for us in by_voice.values() for i in range(0, len(us) - k + 1, k)]
        rng.shuffle(groups)
        for j, g in enumerate(groups[:per_count]):
            parts: list[np.ndarray] = []
            for i, u in enumerate(g):
                parts += [silence, load_utterance_audio(u)] if i else [load_utterance_audio(u)]
            wave = np.concatenate(parts)
            uid = f"long{k}-{j:03d}"
            save_audio(folder / "audio" / f"{uid}.flac", wave)
            extra = {"parts": k, "sources": [u.id for u in g], "first_text": normalize(g[0].text)}
            out.append(Utterance(uid, f"audio/{uid}.flac", " ".join(normalize(u.text) for u in g), g[0].speaker,
                                 round(len(wave) / SAMPLE_RATE, 4), extra, folder))
    if not out:
        raise MalsoriError(f"{test}: no test utterances to build the long set from")
    write_manifest(manifest, out)
    stamp.write_text(json.dumps(settings))
    return read_manifest(manifest).utterances


def bucket_edges(unit: float, durations: list[float], min_count: int = 1) -> list[float]:
    """Edges at multiples of `unit` seconds (the training median) up to the longest duration; an edge is dropped when
    the bucket below it would hold fewer than `min_count` durations (and the top bucket is merged down when it would),
    so buckets are wider where utterances are scarce. Buckets are [lo, hi), the last one [lo, hi]."""
    top = max(durations)
    n = max(1, math.ceil(top / unit))
    edges = [0.0]
    for i in range(1, n):
        if sum(edges[-1] <= d < i * unit for d in durations) >= min_count:
            edges.append(i * unit)
    if len(edges) > 1 and sum(d >= edges[-1] for d in durations) < min_count:
        edges.pop()
    edges.append(n * unit)
    return edges


def bucket_of(d: float, edges: list[float]) -> int:
    """Index of the bucket holding duration d ([lo, hi), the last bucket closed)."""
    for i in range(len(edges) - 1):
        if d < edges[i + 1]:
            return i
    return len(edges) - 2


# -- training -------------------------------------------------------------------------------------------------------
def family_config(cfg: CompareConfig, recipe: Path, corpus: dict[str, Path], run: Path) -> TrainConfig:
    """The recipe with the comparison's corpus, budget, threads and seed imposed, then the user's overrides.

    No per-epoch validation: its decoding time would come out of the training budget, unequally across families."""
    imposed = [f"data.train={corpus['train']}", "data.valid=", f"out={run}", f"max_minutes={cfg.minutes}",
               f"threads={cfg.threads}", f"seed={cfg.seed}", f"device={cfg.device}", "progress=false", "max_epochs=1000000"]
    return load_config(TrainConfig, recipe, imposed + list(cfg.overrides))


def train_family(tcfg: TrainConfig, retrain: bool, log: Callable[[str], None]) -> tuple[Path, bool]:
    """(model folder, trained now?). A finished run with the same config is kept unless `retrain`; an unfinished one
    (interrupted) is started again from scratch, since resuming would give it more than one budget of wall-clock time."""
    run = Path(tcfg.out)
    model_dir = run / "model"
    saved = run / "train_config.json"
    if model_dir.is_dir() and saved.is_file() and not retrain:
        old = json.loads(saved.read_text())
        old.pop("progress", None)
        now = to_dict(tcfg)
        now.pop("progress", None)
        if old == now:
            log(f"{run.name}: model exists, not retrained (--retrain to redo)")
            return model_dir, False
        log(f"{run.name}: config changed since the saved run, retraining")
    elif run.exists() and not retrain:
        log(f"{run.name}: unfinished run found, training again from scratch")
    if run.exists():
        shutil.rmtree(run)
    log(f"{run.name}: training for {tcfg.max_minutes:g} min on {tcfg.threads} thread(s)")
    t0 = time.perf_counter()
    model_dir = train(tcfg)
    (run / "compare_train.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return model_dir, True


def training_stats(run: Path) -> dict:
    """Steps and epochs (last checkpoint), wall-clock minutes of train() including setup and the final averaging,
    median throughput and the loss curve (run/log.csv)."""
    rows = list(csv.DictReader(open(run / "log.csv"))) if (run / "log.csv").is_file() else []
    ckpts = list_checkpoints(run)
    state = json.loads((ckpts[-1] / "state.json").read_text()) if ckpts else {}
    timing = run / "compare_train.json"
    seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else float(rows[-1]["elapsed"]) if rows else 0.0
    speeds = [float(r["audio_sec_per_sec"]) for r in rows[1:] or rows]
    return {
        "steps": int(state.get("step", 0)),
        "epochs": int(state.get("epoch", 0)),  # completed passes over the training data
        "minutes": seconds / 60.0,
        "audio_sec_per_sec": statistics.median(speeds) if speeds else 0.0,
        "final_loss": float(rows[-1]["loss"]) if rows else None,
        "curve": [[int(r["step"]), float(r["elapsed"]), float(r["loss"])] for r in rows],
    }


# -- evaluation -----------------------------------------------------------------------------------------------------
def load_waves(utts: list[Utterance]) -> tuple[list[Utterance], list[np.ndarray]]:
    """The readable utterances and their samples (unreadable audio is left out)."""
    keep, waves = [], []
    for u in utts:
        try:
            waves.append(load_utterance_audio(u))
            keep.append(u)
        except AudioError:
            continue
    return keep, waves


def decode_set(rec: Recognizer, utts: list[Utterance], waves: list[np.ndarray], method: str, beam_size: int,
               batch_size: int, whole: bool = False) -> dict:
    """Decode preloaded waves; WER/CER, RTF (features + model + search) and per-utterance hypotheses.
    `whole`: never cut long inputs into segments, so the model sees each utterance whole."""
    t0 = time.perf_counter()
    options = DecodeOptions(method=method, beam_size=beam_size)
    out = rec.transcribe_waves(waves, options, batch_size, max_segment_seconds=1e9 if whole else 30.0)
    seconds = time.perf_counter() - t0
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    refs, hyps = [normalize(u.text) for u in utts], [t.text for t in out]
    r = error_rates(refs, hyps)
    return {"wer": r.wer, "cer": r.cer, "words": r.words, "utterances": r.utterances, "rtf": seconds / max(audio, 1e-9),
            "audio_seconds": audio, "hyps": hyps}


def bucket_rates(utts: list[Utterance], hyps: list[str], edges: list[float]) -> list[dict]:
    """WER/CER of each duration bucket."""
    out = []
    for b in range(len(edges) - 1):
        idx = [i for i, u in enumerate(utts) if bucket_of(u.duration, edges) == b]
        r = error_rates([normalize(utts[i].text) for i in idx], [hyps[i] for i in idx])
        durs = [utts[i].duration for i in idx]
        out.append({"lo": edges[b], "hi": edges[b + 1], "utterances": len(idx), "words": r.words,
                    "mean_duration": statistics.fmean(durs) if durs else 0.0, "wer": r.wer, "cer": r.cer,
                    "substitutions": r.substitutions, "deletions": r.deletions, "insertions": r.insertions})
    return out


def evaluate_family(model_dir: Path, cfg: CompareConfig, sets: dict, edges: dict[str, list[float]], log: Callable[[str], None]) -> dict:
    """Every measurement of one trained family (cached in the run folder, keyed by the model file and the settings);
    greedy results of the sets named in `edges` are also split into duration buckets with those edges."""
    key_src = json.dumps({"format": 2, "model": _file_digest(model_dir / "model.safetensors"), "beam": cfg.beam_size, "batch": cfg.batch_size,
                          "threads": cfg.threads, "device": cfg.device, "long_beam": cfg.long_beam, "edges": edges,
                          "sets": {k: [u.id for u in v[0]] for k, v in sets.items()}}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()
    cache = model_dir.parent / "compare_eval.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            log(f"{model_dir.parent.name}: evaluation cached")
            return cached["result"]
    rec = Recognizer.load(model_dir, cfg.device)
    config = json.loads((model_dir / "config.json").read_text())["model"]
    res: dict = {
        "params": sum(p.numel() for p in rec.model.parameters()),
        "encoder": config["encoder"], "head": config["head"],
        "decoder": config["attention"]["decoder"] if config["head"] == "attention" else "",
    }
    for name, (utts, waves) in sets.items():
        if not utts:
            continue
        methods = ("greedy", "beam") if name != "long" or cfg.long_beam else ("greedy",)
        res[name] = {}
        for m in methods:
            log(f"{model_dir.parent.name}: {m} on {name} ({len(utts)} utterances)")
            d = decode_set(rec, utts, waves, m, cfg.beam_size, cfg.batch_size, whole=name == "long")
            hyps = d.pop("hyps")
            if name in edges and (m == "greedy" or name == "long"):
                d["buckets"] = bucket_rates(utts, hyps, edges[name])
            if name == "long":  # joined inputs whose output is exactly their first part: the decoder stopped at the join
                joined = [(u, h) for u, h in zip(utts, hyps) if u.extra.get("parts", 1) > 1]
                d["joined"] = len(joined)
                d["stopped_at_first_join"] = sum(h == u.extra.get("first_text") for u, h in joined)
            res[name][m] = d
    cache.write_text(json.dumps({"key": key, "result": res}))
    return res


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the run --------------------------------------------------------------------------------------------------------
def run_compare(cfg: CompareConfig, command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) every family, evaluate them all, write compare.md, results.json and the plots; returns the results."""
    if cfg.minutes <= 0 and not any(o.startswith("max_steps=") for o in cfg.overrides):
        raise ConfigError("minutes: the training budget must be > 0 (or give max_steps= in overrides)")
    recipes = {resolve_family(f).stem: resolve_family(f) for f in cfg.families}
    corpus = corpus_manifests(cfg.corpus)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        train_durs = [u.duration for u in read_manifest(corpus["train"]).utterances]
        if not train_durs:
            raise MalsoriError(f"{corpus['train']}: no utterances")
        median, longest = statistics.median(train_durs), max(train_durs)
        long_utts = build_long_set(corpus["test"], out / "long_test", cfg.long_max_concat, cfg.long_per_count, cfg.long_gap, cfg.seed)
        edges = bucket_edges(median, [u.duration for u in long_utts], cfg.long_min_bucket)
        sets = {"test": load_waves(evenly_spaced(read_manifest(corpus["test"]).utterances, cfg.test_limit)),
                "long": load_waves(long_utts)}
        # lengths inside the training range: the test split in buckets of half the training median
        test_durs = [u.duration for u in sets["test"][0]]
        if not test_durs:
            raise MalsoriError(f"{corpus['test']}: no readable test utterances")
        test_edges = bucket_edges(median / 2, test_durs, cfg.long_min_bucket)
        real_note = ""
        if cfg.real_limit > 0 and cfg.real_manifest and Path(cfg.real_manifest).is_file():
            sets["real"] = load_waves(evenly_spaced(read_manifest(cfg.real_manifest).utterances, cfg.real_limit))
        else:
            why = "real_limit is 0" if cfg.real_limit <= 0 else f"{cfg.real_manifest or 'no manifest'} not found"
            real_note = f"real speech skipped: {why}"
            log(real_note)
        configs = {name: family_config(cfg, recipe, corpus, out / "runs" / name) for name, recipe in recipes.items()}  # typos fail now
        families: dict[str, dict] = {}
        failed: dict[str, str] = {}
        for name, recipe in recipes.items():
            tcfg = configs[name]
            try:
                model_dir, _ = train_family(tcfg, cfg.retrain, log)
                torch.set_num_threads(max(1, cfg.threads))  # train() sets it too; decoding uses the same count
                families[name] = {"recipe": str(recipe), "description": _recipe_description(recipe), "model_dir": str(model_dir),
                                  "lr": tcfg.optim.lr, "train": training_stats(Path(tcfg.out)),
                                  **evaluate_family(model_dir, cfg, sets, {"test": test_edges, "long": edges}, log)}
            except Exception as e:  # one family failing (out of memory, a diverged run) must not lose the others
                failed[name] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
                log(f"{name}: FAILED, left out of the report ({failed[name]})")
        if not families:
            raise MalsoriError(f"every family failed; {next(iter(failed))}: {next(iter(failed.values()))}")
        long_durs = [u.duration for u in long_utts]
        results = {
            "command": command or _command_line(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "commit": git_commit(), "config": to_dict(cfg),
            "corpus": {"train_utterances": len(train_durs), "train_hours": sum(train_durs) / 3600, "train_median_s": median,
                       "train_max_s": longest, "test_utterances": len(sets["test"][0]), "test_edges": test_edges,
                       "test_bucket_counts": [sum(bucket_of(d, test_edges) == b for d in test_durs) for b in range(len(test_edges) - 1)]},
            "long_set": {"manifest": str(out / "long_test" / "manifest.jsonl"), "utterances": len(long_utts), "edges": edges,
                         "min_s": min(long_durs), "max_s": max(long_durs), "median_s": statistics.median(long_durs),
                         "beyond_train_median": sum(d > median for d in long_durs) / len(long_durs),
                         "beyond_train_max": sum(d > longest for d in long_durs) / len(long_durs),
                         "bucket_counts": [sum(bucket_of(d, edges) == b for d in long_durs) for b in range(len(edges) - 1)]},
            "real": {"manifest": cfg.real_manifest, "utterances": len(sets["real"][0])} if "real" in sets else {"skipped": real_note},
            "families": families,
            "failed": failed,
        }
        (out / "results.json").write_text(json.dumps(results, indent=1))
        plots = write_plots(results, out)
        (out / "compare.md").write_text(render_report(results, plots))
        log(f"report: {out / 'compare.md'}")
        return results
    finally:
        torch.set_num_threads(threads_before)


def _recipe_description(recipe: Path) -> str:
    """The recipe's first comment line."""
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


# -- plots ----------------------------------------------------------------------------------------------------------
def write_plots(results: dict, out: Path) -> dict[str, str]:
    """error_vs_duration.png, wer_by_family.png, loss_curves.png; returns {name: file name}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fams = results["families"]
    median, longest = results["corpus"]["train_median_s"], results["corpus"]["train_max_s"]
    files = {}

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    for ax, (key, title) in zip(fig.subplots(1, 2), LENGTH_SETS.items()):
        for name, f in fams.items():
            b = f[key]["greedy"]["buckets"]
            ax.plot([x["mean_duration"] for x in b], [100 * x["wer"] for x in b], marker="o", label=name,
                    linestyle="--" if f["decoder"] == "fixed" else "-", linewidth=2.5 if f["decoder"] == "fixed" else 1.5)
        ax.axvline(median, color="grey", linestyle=":", label=f"train median {median:.1f} s")
        ax.axvline(longest, color="black", linestyle=":", label=f"train max {longest:.1f} s")
        ax.set_xlabel("utterance duration (s, bucket mean)")
        ax.set_ylabel("WER % (greedy)")
        ax.set_title(f"WER vs length {title}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "error_vs_duration.png", dpi=110)
    files["error_vs_duration"] = "error_vs_duration.png"

    has_real = any("real" in f for f in fams.values())
    panels = [("test", "synthetic test split")] + ([("real", "real speech (speechocean762)")] if has_real else [])
    fig = Figure(figsize=(5.5 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = list(fams)
    x = np.arange(len(names))
    for ax, (key, title) in zip(axes, panels):
        for k, (method, off) in enumerate((("greedy", -0.2), ("beam", 0.2))):
            vals = [100 * fams[n][key][method]["wer"] if key in fams[n] else 0.0 for n in names]
            bars = ax.bar(x + off, vals, width=0.4, label=method)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("WER %")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "wer_by_family.png", dpi=110)
    files["wer_by_family"] = "wer_by_family.png"

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for name, f in fams.items():
        curve = f["train"]["curve"]
        if curve:
            marker = "o" if len(curve) < 20 else None
            ax1.plot([c[0] for c in curve], [c[2] for c in curve], label=name, marker=marker)
            ax2.plot([c[1] / 60 for c in curve], [c[2] for c in curve], label=name, marker=marker)
    for ax, xl in ((ax1, "optimizer step"), (ax2, "wall-clock minutes")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss (log scale)")
        ax.set_title(f"training loss by {xl.split()[-1]} (objectives differ by head)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    files["loss_curves"] = "loss_curves.png"
    return files


# -- the report -----------------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def findings(results: dict) -> list[str]:
    """Plain statements of what the measured numbers show, including claims they do not bear out."""
    fams = results["families"]
    minutes = results["config"]["minutes"]
    lines = []
    best = min(fams, key=lambda n: fams[n]["test"]["greedy"]["wer"])
    best_beam = min(fams, key=lambda n: fams[n]["test"]["beam"]["wer"])
    bw = fams[best]["test"]["greedy"]["wer"]
    lines.append(f"Lowest test WER: **{best}** with greedy search ({_pct(bw)}%), **{best_beam}** with beam search "
                 f"({_pct(fams[best_beam]['test']['beam']['wer'])}%).")
    if bw > POOR_WER:
        lines.append(f"**All models are still poor at this budget** (best greedy WER {_pct(bw)}% after {minutes:g} min each): "
                     "the ranking says which family learns fastest on this machine, not which is best when trained to "
                     "convergence, and the length comparison below is between under-trained models.")

    # the talk's claim, read twice: inside the training lengths (test split) and beyond them (joined utterances)
    lines += length_findings(fams, "test", results["corpus"]["test_edges"])
    lines += length_findings(fams, "long", results["long_set"]["edges"])
    if not any(f["decoder"] == "fixed" for f in fams.values()):
        lines.append("No fixed-vector family was trained, so the claim that it degrades with length was not tested.")
    beyond = results["long_set"]["beyond_train_max"]
    lines.append(f"{100 * beyond:.0f}% of the long set is longer than any training utterance "
                 f"(train max {results['corpus']['train_max_s']:.1f} s): errors there also measure length generalization.")

    gains = {n: fams[n]["test"]["greedy"]["wer"] - fams[n]["test"]["beam"]["wer"] for n in fams}
    helped = max(gains, key=gains.get)
    hurt = [n for n, g in gains.items() if g < 0]
    width = results["config"]["beam_size"]
    if gains[helped] > 0:
        s = (f"Beam search (width {width}) helps {helped} most ({_pct(fams[helped]['test']['greedy']['wer'])}% → "
             f"{_pct(fams[helped]['test']['beam']['wer'])}% WER).")
    else:
        s = f"Beam search (width {width}) lowers no family's test WER."
    if hurt:
        s += f" It is worse than greedy for {', '.join(hurt)}."
    lines.append(s)

    if len(fams) > 1:  # throughput and speed spreads need two families
        speed = {n: fams[n]["train"]["audio_sec_per_sec"] for n in fams}
        fast, slow = max(speed, key=speed.get), min(speed, key=speed.get)
        lines.append(f"Training throughput differs {speed[fast] / max(speed[slow], 1e-9):.1f}x: {fast} processes "
                     f"{speed[fast]:.0f} s of audio per second ({fams[fast]['train']['steps']} steps in the budget), {slow} "
                     f"{speed[slow]:.0f} ({fams[slow]['train']['steps']} steps): a matched wall-clock budget favours the fast families.")
        rtf = {n: fams[n]["test"]["greedy"]["rtf"] for n in fams}
        lines.append(f"Greedy decoding RTF ranges from {min(rtf.values()):.4f} ({min(rtf, key=rtf.get)}) to "
                     f"{max(rtf.values()):.4f} ({max(rtf, key=rtf.get)}).")

    real = {n: fams[n]["real"]["greedy"]["wer"] for n in fams if "real" in fams[n]}
    if real:
        rb = min(real, key=real.get)
        if real[rb] >= 0.8 and bw >= 0.8:
            lines.append(f"On real speech (speechocean762) the best greedy WER is {_pct(real[rb])}% ({rb}); as the models have "
                         "not learned the synthetic test split either, this says nothing yet about transfer to human speech.")
        elif real[rb] >= 0.8:
            lines.append(f"**No family transfers to real speech**: on speechocean762 the best greedy WER is {_pct(real[rb])}% "
                         f"({rb}) against {_pct(bw)}% on the synthetic test split. Trained only on eSpeak voices, the models "
                         "have never heard a human; the synthetic test split hides this domain gap.")
        else:
            lines.append(f"On real speech (speechocean762) the best greedy WER is {_pct(real[rb])}% ({rb}), against "
                         f"{_pct(fams[rb]['test']['greedy']['wer'])}% on the synthetic test split.")
    return lines


def length_findings(fams: dict, key: str, edges: list[float]) -> list[str]:
    """Whether the fixed-vector model degrades with length while the attention models hold, from the greedy duration
    buckets of set `key` (a LENGTH_SETS key, with bucket `edges`); on the long set also how attention models fail."""

    def delta(n: str) -> tuple[float, float]:
        b = fams[n][key]["greedy"]["buckets"]
        return b[0]["wer"], b[-1]["wer"]

    span = f"{edges[0]:.1f}–{edges[1]:.1f} s to {edges[-2]:.1f}–{edges[-1]:.1f} s"
    changes = ", ".join(f"{n} {_pct(delta(n)[0])}→{_pct(delta(n)[1])}" for n in fams)
    where = LENGTH_SETS[key]
    Where = where[0].upper() + where[1:]
    lines = [f"WER {where}, shortest to longest bucket ({span}): {changes}."]
    fixed = [n for n in fams if fams[n]["decoder"] == "fixed"]
    attn = [n for n in fams if fams[n]["head"] == "attention" and fams[n]["decoder"] != "fixed"]
    claim = f"{Where}, the claim that a fixed-vector decoder degrades with length while attention holds"
    if len(edges) < 3:
        return lines + [f"{Where}, all utterances fell into one duration bucket: nothing can be said about length."]
    if not fixed:
        return lines
    for f in fixed:
        s, l = delta(f)
        learned_attn = [a for a in attn if delta(a)[0] < UNLEARNED_WER]
        if s >= UNLEARNED_WER:
            lines.append(f"{claim} **cannot be tested**: {f} has not learned even the shortest utterances "
                         f"(WER {_pct(s)}%), so its flat curve is a floor, not robustness.")
            continue
        if l - s < DEGRADES:
            lines.append(f"{claim} is **not borne out**: the fixed-vector model {f} does not degrade with length "
                         f"({_pct(s)}% → {_pct(l)}%, less than {100 * DEGRADES:.0f} points).")
            continue
        if not learned_attn:
            lines.append(f"{f} degrades with length ({_pct(s)}% → {_pct(l)}%), but no attention model learned the short "
                         "utterances, so the contrast with attention is not tested.")
            continue
        worst_attn = max(delta(a)[1] - delta(a)[0] for a in learned_attn)
        if l - s >= worst_attn + DEGRADES:
            lines.append(f"{claim} is **borne out**: {f} degrades ({_pct(s)}% → {_pct(l)}%) by at least "
                         f"{100 * DEGRADES:.0f} points more than any attention model that learned "
                         f"({', '.join(learned_attn)}; largest change {100 * worst_attn:+.1f} points).")
        else:
            lines.append(f"{claim} is **not borne out**: {f} degrades ({_pct(s)}% → {_pct(l)}%) but attention models "
                         f"degrade about as much or more (largest change {100 * worst_attn:+.1f} points)."
                         + (" Attention decoders trained only on utterances up to the training maximum often lose "
                            "their alignment on longer inputs." if key == "long" else ""))
    for a in attn if key == "long" else []:  # how an attention model fails on joined inputs
        g = fams[a]["long"]["greedy"]
        if g.get("joined") and g["stopped_at_first_join"] >= 0.25 * g["joined"]:  # at the pause: not a bottleneck
            lines.append(f"{a} output exactly the first of the joined utterances and stopped there for "
                         f"{g['stopped_at_first_join']} of {g['joined']} joined inputs: it ends at the pause between utterances "
                         "(every training utterance ends after one), which is a failure to go on, not a bottleneck.")
        last = g["buckets"][-1]
        errors = sum(last.get(k, 0) for k in ("substitutions", "deletions", "insertions"))
        if errors and last["deletions"] / errors >= 0.5 and last["wer"] - delta(a)[0] >= DEGRADES:
            lines.append(f"{a}'s errors in the longest bucket are {100 * last['deletions'] / errors:.0f}% deletions "
                         f"({last['deletions']} of {last['words']} reference words left out): it drops words (stops early or "
                         "skips) rather than mishearing them.")
    return lines


def render_report(results: dict, plots: dict[str, str]) -> str:
    """compare.md: setup, tables, findings and the plots."""
    c, corpus, ls, fams = results["config"], results["corpus"], results["long_set"], results["families"]
    edges = ls["edges"]
    L = [
        "# Model families compared on one corpus",
        "",
        f"- command: `{results['command']}`",
        f"- date: {results['date']}" + (f" (commit {results['commit']})" if results["commit"] else ""),
        f"- machine: {results['machine']}",
        f"- budget: {c['minutes']:g} wall-clock minutes of training per family, {c['threads']} thread(s), seed {c['seed']}"
        + (f"; overrides: `{' '.join(c['overrides'])}`" if c["overrides"] else ""),
        f"- corpus: `{c['corpus']}`: {corpus['train_utterances']} training utterances ({corpus['train_hours']:.2f} h, "
        f"median {corpus['train_median_s']:.2f} s, max {corpus['train_max_s']:.2f} s), {corpus['test_utterances']} test utterances "
        "(also bucketed by duration, in multiples of half the training median)",
        f"- long set: {ls['utterances']} utterances of 1–{c['long_max_concat']} joined test utterances of one voice "
        f"({ls['min_s']:.1f}–{ls['max_s']:.1f} s, median {ls['median_s']:.1f} s; {100 * ls['beyond_train_median']:.0f}% longer than "
        f"the training median, {100 * ls['beyond_train_max']:.0f}% longer than the training maximum); decoded whole, never cut. "
        f"Bucket edges (multiples of the training median, buckets of at least {c['long_min_bucket']} utterances): "
        f"{', '.join(f'{e:.2f}' for e in edges)} s",
        "- real speech: " + (f"{results['real']['utterances']} evenly spaced utterances of `{results['real']['manifest']}`"
                             if "utterances" in results["real"] else results["real"]["skipped"]),
        "",
        "## What the numbers show",
        "",
        *[f"- **{n} failed** and is left out of every table: {msg}" for n, msg in results.get("failed", {}).items()],
        *[f"- {line}" for line in findings(results)],
        "",
        "## Families",
        "",
        "| family | what | params | peak lr | minutes | steps | epochs | train speed (audio s/s) | last logged loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, f in fams.items():
        t = f["train"]
        loss = "–" if t["final_loss"] is None else f"{t['final_loss']:.3g}"
        L.append(f"| {n} | {f['description']} | {f['params'] / 1e6:.2f} M | {f['lr']:g} | {t['minutes']:.2f} | {t['steps']} | "
                 f"{t['epochs']} | {t['audio_sec_per_sec']:.1f} | {loss} |")
    L += ["", f"## Test split (WER / CER %, RTF; beam width {c['beam_size']})", "",
          "| family | WER greedy | WER beam | CER greedy | CER beam | RTF greedy | RTF beam |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n, f in fams.items():
        g, b = f["test"]["greedy"], f["test"]["beam"]
        L.append(f"| {n} | {_pct(g['wer'])} | {_pct(b['wer'])} | {_pct(g['cer'])} | {_pct(b['cer'])} | {g['rtf']:.4f} | {b['rtf']:.4f} |")
    for key, e, counts in (("test", corpus["test_edges"], corpus["test_bucket_counts"]),
                           ("long", edges, ls["bucket_counts"])):
        heads = [f"{e[i]:.1f}–{e[i + 1]:.1f} s (n={counts[i]})" for i in range(len(e) - 1)]
        L += ["", f"## Error rate against utterance length {LENGTH_SETS[key]} (greedy WER %, CER % in brackets)", "",
              "| family | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
        for n, f in fams.items():
            L.append(f"| {n} | " + " | ".join(f"{_pct(b['wer'])} ({_pct(b['cer'])})" for b in f[key]["greedy"]["buckets"]) + " |")
        if key == "long" and c["long_beam"]:
            L += ["", "Beam search on the long set (WER %):", "", "| family | " + " | ".join(heads) + " |",
                  "|---|" + "---:|" * len(heads)]
            for n, f in fams.items():
                L.append(f"| {n} | " + " | ".join(_pct(b["wer"]) for b in f["long"]["beam"]["buckets"]) + " |")
    if any("real" in f for f in fams.values()):
        L += ["", "## Real speech (speechocean762, WER / CER %, RTF)", "",
              "| family | WER greedy | WER beam | CER greedy | CER beam | RTF greedy |", "|---|---:|---:|---:|---:|---:|"]
        for n, f in fams.items():
            g, b = f["real"]["greedy"], f["real"]["beam"]
            L.append(f"| {n} | {_pct(g['wer'])} | {_pct(b['wer'])} | {_pct(g['cer'])} | {_pct(b['cer'])} | {g['rtf']:.4f} |")
    L += ["", "## Plots", "",
          f"![error rate against utterance length]({plots['error_vs_duration']})", "",
          "Dashed thick line: the fixed-vector model. Dotted verticals: training median and maximum duration. Left: the "
          "test split in buckets of half the training median; right: the long set in buckets of the training median.", "",
          f"![WER per family, greedy and beam]({plots['wer_by_family']})", "",
          f"![training loss]({plots['loss_curves']})", "",
          "Losses are per utterance and differ in kind by head (CTC, smoothed cross-entropy + CTC, RNN-T): compare "
          "shapes, not levels, across heads.", "",
          "RTF = decoding seconds / audio seconds (features + model + search, audio preloaded), measured with the same "
          "thread count on a machine that may be shared. Per-family numbers: `results.json`.", ""]
    return "\n".join(L)
