"""The sets a comparison measures on: the corpus splits, a long-utterance set made by joining test utterances of one
voice, and duration buckets (edges and per-bucket error rates)."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import numpy as np

from malsori.audio import SAMPLE_RATE, save_audio
from malsori.data.dataset import load_utterance_audio
from malsori.data.manifest import Utterance, atomic_write_json, read_manifest, write_manifest
from malsori.errors import MalsoriError
from malsori.metrics import error_rates
from malsori.text import normalize

SPLITS = ("train", "dev", "test")


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
    atomic_write_json(stamp, settings)
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
