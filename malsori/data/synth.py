"""Offline speech corpus synthesis: eSpeak NG by default, or Kokoro-82M / Piper (malsori.data.tts engines).

Every utterance is planned up front from the config and its seed: sentence, voice (an eSpeak accent + variant,
a Kokoro voice or blend of two) and prosody. Dev and test get voices and sentences that train never has (Piper
has one voice: there, sentences only). Workers only carry out the plan, and each utterance depends only on its
own plan entry, so the corpus is the same whatever the number of workers, and a rerun skips finished files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malsori.audio import audio_duration, save_audio
from malsori.config import from_dict, to_dict
from malsori.data.augment import AugmentConfig, Augmenter
from malsori.data.manifest import Utterance, atomic_write_json, write_manifest
from malsori.data.sentences import generate_sentences, read_text_sentences
from malsori.data.synth_config import SPLITS, SynthConfig
from malsori.data.tts.engine import SAMPLE_RATE, Engine, make_engine
from malsori.data.tts.espeak import (  # noqa: F401  (eSpeak names this module has always offered)
    Synthesizer,
    SynthParams,
    Voice,
    available_accents,
    available_variants,
)
from malsori.errors import ConfigError
from malsori.text import normalize

@dataclass
class Job:
    """One planned utterance."""

    split: str
    id: str
    text: str  # the sentence as written (manifest `text`)
    spoken: str  # the normalized words (manifest `text_normalized`); the engine reads them (Engine.reading)
    source: str  # generator domain, or "file"
    voice: Any  # the engine's voice: eSpeak Voice, or Speaker (a Kokoro voice or blend, the Piper voice)
    params: Any  # the engine's prosody: eSpeak SynthParams, KokoroParams, PiperParams
    augment: dict | None  # augmentation params drawn for it (None: split not augmented)
    augment_seed: int  # seed of the noise samples / impulse response


def _sentence_splits(cfg: SynthConfig, counts: dict[str, int], notes: dict) -> dict[str, list[tuple[str, str]]]:
    """(source, sentence) lists per split; no normalized sentence is in two splits."""
    pool: list[tuple[str, str]] = []
    skipped: list[str] = []
    if cfg.text_files:
        pool += [("file", s) for s in read_text_sentences(cfg.text_files, strict=cfg.strict, skipped=skipped)]
    total = sum(counts.values())
    if cfg.use_generator or (cfg.use_generator is None and not cfg.text_files):
        pool += generate_sentences(total, cfg.seed, cfg.domains or None)
    unique: dict[str, tuple[str, str]] = {}
    too_long = 0
    for src, s in pool:
        key = normalize(s)
        if len(key.split()) > cfg.max_words:
            too_long += 1
        else:
            unique.setdefault(key, (src, s))
    notes.update(text_lines_skipped=skipped, sentences_too_long=too_long)
    sentences = list(unique.values())
    np.random.default_rng([cfg.seed, 2]).shuffle(sentences)
    n_dev = math.ceil(len(sentences) * counts["dev"] / total) if counts["dev"] else 0
    n_test = math.ceil(len(sentences) * counts["test"] / total) if counts["test"] else 0
    if not sentences or (counts["train"] and len(sentences) <= n_dev + n_test):
        raise ConfigError(f"only {len(sentences)} usable sentences: too few to give train, dev and test their own")
    return {"dev": sentences[:n_dev], "test": sentences[n_dev: n_dev + n_test], "train": sentences[n_dev + n_test:]}


def plan(cfg: SynthConfig) -> tuple[list[Job], dict]:
    """Every utterance of the corpus, in a fixed order, from the config alone; plus notes for the summary."""
    engine = make_engine(cfg)
    counts = {"train": cfg.num_train, "dev": cfg.num_dev, "test": cfg.num_test}
    notes: dict = engine.notes()
    if cfg.train_hours > 0:  # size train from a duration estimate over sample sentences
        probe = _sentence_splits(cfg, {"train": 200, "dev": 0, "test": 0}, {})["train"]
        mean = float(np.mean([engine.estimate_seconds(normalize(s)) for _, s in probe]))
        counts["train"] = max(1, round(cfg.train_hours * 3600 / mean))
    voices = engine.split_voices()
    sentences = _sentence_splits(cfg, counts, notes)
    augmenter = Augmenter(cfg.augment, SAMPLE_RATE)  # only draws params here
    jobs: list[Job] = []
    for k, split in enumerate(SPLITS):
        for i in range(counts[split]):
            rng = np.random.default_rng([cfg.seed, 3, k, i])
            src, text = sentences[split][i % len(sentences[split])]
            voice, p = engine.draw(rng, split, voices[split])
            aug = augmenter.sample(rng) if cfg.augment.active and split in cfg.augment_splits else None
            seed = int(rng.integers(2**63))
            jobs.append(Job(split, f"{split}-{i:06d}", text, normalize(text), src, voice, p, aug, seed))
    return jobs, notes


# ---- running the plan -------------------------------------------------------------------------------

_worker: dict = {}  # per-process engine and Augmenter, set by _init_worker


def _init_worker(engine: Engine, augment: dict) -> None:
    cfg = from_dict(AugmentConfig, augment)
    babble = None
    if cfg.noise_prob > 0 and "babble" in cfg.noise_types:  # a few fixed utterances to mix into babble noise
        voices = engine.split_voices()["train"][:8]
        sents = generate_sentences(len(voices), seed=12345)
        babble = [engine.synthesize(normalize(s), v, engine.default_params()) for (_, s), v in zip(sents, voices)]
    _worker.update(engine=engine, augmenter=Augmenter(cfg, SAMPLE_RATE, babble))


def _run_job(job: Job, out_dir: Path) -> tuple[str, float]:
    """Synthesize, augment and save one utterance; returns (id, seconds)."""
    engine = _worker["engine"]
    wave = engine.synthesize(engine.reading(job.text), job.voice, job.params)
    if job.augment:
        wave = _worker["augmenter"].apply(wave, job.augment, np.random.default_rng(job.augment_seed))
        peak = float(np.abs(wave).max()) if len(wave) else 0.0
        if peak > 0.99:
            wave = wave * (0.99 / peak)
    save_audio(_audio_path(out_dir, job), wave, SAMPLE_RATE)
    return job.id, len(wave) / SAMPLE_RATE


def _audio_path(out_dir: Path, job: Job) -> Path:
    return out_dir / "audio" / job.split / f"{job.id}.flac"


def _saved_config(cfg: SynthConfig) -> dict:
    """What must match for a resume: the config without `workers`, `strict` and `voices_dir` (a place, not what is
    in it), plus a hash of every text file."""
    d = to_dict(cfg)
    d.pop("workers"), d.pop("strict"), d.pop("voices_dir")
    files = [Path(f) for f in cfg.text_files if Path(f).is_file()]
    d["text_file_sha256"] = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    return {"format": 1, "config": d}


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dict → {"a.b": value}, so a mismatch names the exact field."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _check_resume(out_dir: Path, saved: dict) -> None:
    path = out_dir / "synth_config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(old, dict) or not isinstance(old.get("config", {}), dict):
                raise ValueError("not a JSON object with a 'config' object")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ConfigError(f"{path}: not readable ({str(e).splitlines()[0]}), so this folder's settings are unknown and it cannot be "
                              "resumed: restore the file from the run that made the folder to resume, or choose another --out") from None
        # a field added to SynthConfig after the folder was made counts as having its default there
        added = json.loads(json.dumps(_saved_config(SynthConfig())["config"]))
        old_cfg, new_cfg = _flat({**added, **old.get("config", {})}), _flat(json.loads(json.dumps(saved["config"])))
        diff = [k for k in sorted(set(old_cfg) | set(new_cfg)) if old_cfg.get(k) != new_cfg.get(k)]
        if diff:
            k = diff[0]
            more = f", and {len(diff) - 1} more" if len(diff) > 1 else ""
            raise ConfigError(
                f"{path}: folder was made with different arguments ({k}: {old_cfg.get(k)!r} there, "
                f"{new_cfg.get(k)!r} now{more}); resume it with its own arguments, or choose another --out"
            )
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: folder is not empty and has no synth_config.json; use a new or empty folder")
    atomic_write_json(path, saved, indent=2)


def synthesize_corpus(cfg: SynthConfig, out_dir: str | os.PathLike, progress: bool = True) -> dict[str, Path]:
    """Synthesize (or finish) the corpus in `out_dir`; returns split → manifest path (splits with utterances).

    Writes OUT/audio/<split>/<id>.flac, OUT/<split>.jsonl, OUT/synth_config.json and OUT/synth_stats.json.
    With workers > 1 the worker processes are spawned: call this from under `if __name__ == "__main__":` in scripts.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    start = time.perf_counter()
    saved = _saved_config(cfg)  # hashes text files first: a missing file fails below with its name
    engine = make_engine(cfg)
    engine.check()  # a missing optional engine or voice fails before anything is written
    jobs, notes = plan(cfg)
    _check_resume(out_dir, saved)
    for split in SPLITS:  # temp files of a killed run (save_audio writes ".<id>.*.flac" then renames)
        for tmp in (out_dir / "audio" / split).glob(".*.flac"):
            tmp.unlink(missing_ok=True)
    done = {j.id: audio_duration(_audio_path(out_dir, j)) for j in jobs if _audio_path(out_dir, j).exists()}
    todo = [j for j in jobs if j.id not in done]
    new_seconds = 0.0
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    bar = tqdm(total=len(jobs), initial=len(done), unit="utt", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()

    def record(result: tuple[str, float]) -> None:
        nonlocal new_seconds
        uid, seconds = result
        done[uid] = seconds
        new_seconds += seconds
        bar.update()
        bar.set_postfix_str(f"{new_seconds / max(time.perf_counter() - t0, 1e-9):.0f}x real time", refresh=False)

    with tempfile.TemporaryDirectory(prefix="malsori-synth-") as tmp:  # files the workers share (eSpeak's data)
        engine.prepare(Path(tmp))
        init_args = (engine, to_dict(cfg.augment))
        if todo and workers == 1:
            _init_worker(*init_args)
            for job in todo:
                record(_run_job(job, out_dir))
        elif todo:  # "spawn": workers start clean even when the caller has threads (torch) running
            with mp.get_context("spawn").Pool(workers, _init_worker, init_args) as pool:
                for result in pool.imap_unordered(functools.partial(_run_job, out_dir=out_dir), todo, chunksize=4):
                    record(result)
        _worker.clear()
    bar.close()
    manifests = _write_manifests(out_dir, jobs, done)
    stats = {
        "synthesized": len(todo), "skipped_existing": len(jobs) - len(todo),
        "seconds_synthesized": round(new_seconds, 2), "elapsed_s": round(time.perf_counter() - start, 2),
        "synthesis_s": round(time.perf_counter() - t0, 2), "workers": workers, **notes,
    }
    atomic_write_json(out_dir / "synth_stats.json", stats, indent=2)
    return manifests


def _write_manifests(out_dir: Path, jobs: list[Job], durations: dict[str, float]) -> dict[str, Path]:
    """One manifest per split, written atomically, from the plan and the durations of the files."""
    out: dict[str, Path] = {}
    for split in SPLITS:
        split_jobs = [j for j in jobs if j.split == split]
        if not split_jobs:
            continue
        utts = []
        for j in split_jobs:
            extra = {**asdict(j.voice), **asdict(j.params), "source": j.source, "text_normalized": j.spoken}
            if j.augment is not None:
                extra["augment"] = j.augment
            audio = f"audio/{split}/{j.id}.flac"
            utts.append(Utterance(j.id, audio, j.text, j.voice.name, round(durations[j.id], 4), extra))
        out[split] = write_manifest(out_dir / f"{split}.jsonl", utts)
    return out


def corpus_summary(manifests: dict[str, Path]) -> dict[str, dict]:
    """Size and diversity per split: utterances, hours, voices, accents, variants, distinct sentences, vocabulary."""
    from malsori.data.manifest import read_manifest

    out = {}
    for split, path in manifests.items():
        utts = read_manifest(path).utterances
        texts = {u.extra.get("text_normalized") or normalize(u.text) for u in utts}
        out[split] = {
            "utterances": len(utts), "hours": sum(u.duration for u in utts) / 3600,
            "voices": len({u.speaker for u in utts}), "accents": len({u.extra.get("accent") for u in utts}),
            "variants": len({u.extra.get("variant") for u in utts}), "sentences": len(texts),
            "vocabulary": len({w for t in texts for w in t.split()}),
        }
    return out
