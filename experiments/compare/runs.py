"""One family of a comparison: its training config (the comparison's corpus, budget and seed imposed), training or
reusing its run, its training statistics, and every measurement of the trained model (cached in the run folder)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Callable

from malsori.checkpoint import list_checkpoints
from malsori.config import load_config, to_dict
from malsori.data.manifest import atomic_write_json
from malsori.decode.options import DecodeOptions
from malsori.evaluate import score_waves
from malsori.pretrained import Recognizer
from malsori.train import TrainConfig, train

from experiments.compare.config import CompareConfig
from experiments.compare.sets import bucket_rates


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
    atomic_write_json(run / "compare_train.json", {"seconds": time.perf_counter() - t0})
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
    final = float(rows[-1]["loss"]) if rows else None
    diverged = final is not None and not math.isfinite(final)
    return {
        "steps": int(state.get("step", 0)),
        "epochs": int(state.get("epoch", 0)),  # completed passes over the training data
        "minutes": seconds / 60.0,
        "audio_sec_per_sec": statistics.median(speeds) if speeds else 0.0,
        # a diverged run's NaN/Infinity loss is written as null (strict JSON) and flagged; its curve keeps finite points
        "final_loss": None if diverged else final,
        "diverged": diverged,
        "curve": [[int(r["step"]), float(r["elapsed"]), float(r["loss"])] for r in rows if math.isfinite(float(r["loss"]))],
    }


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
            s = score_waves(rec, utts, waves, DecodeOptions(method=m, beam_size=cfg.beam_size), cfg.batch_size,
                            max_segment_seconds=1e9 if name == "long" else 30.0)  # the long set is decoded whole, never cut
            hyps = s.hyps
            d = {"wer": s.rates.wer, "cer": s.rates.cer, "words": s.rates.words, "utterances": s.rates.utterances,
                 "rtf": s.rtf, "audio_seconds": s.audio_seconds}
            if name in edges and (m == "greedy" or name == "long"):
                d["buckets"] = bucket_rates(utts, hyps, edges[name])
            if name == "long":  # joined inputs whose output is exactly their first part: the decoder stopped at the join
                joined = [(u, h) for u, h in zip(utts, hyps) if u.extra.get("parts", 1) > 1]
                d["joined"] = len(joined)
                d["stopped_at_first_join"] = sum(h == u.extra.get("first_text") for u, h in joined)
            res[name][m] = d
    atomic_write_json(cache, {"key": key, "result": res})
    return res


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe_description(recipe: Path) -> str:
    """The recipe's first comment line."""
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
