"""Synthesis speed (x real time, 1 and 2 workers, side by side) and the size/diversity of the demo's default corpus.

    python benchmarks/bench_synth.py [--utts 400] [--runs 3]

Wall-clock speed depends on what else runs on the machine, so each run also reports CPU seconds used (this
process and its workers): audio seconds per CPU second is what one fully available core delivers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._record import record  # noqa: E402
from malsori.audio import resample, save_audio  # noqa: E402
from malsori.data.synth import SynthConfig, corpus_summary, plan, synthesize_corpus  # noqa: E402
from malsori.data.tts.engine import SAMPLE_RATE, trim_and_level  # noqa: E402
from malsori.data.tts.espeak import (  # noqa: E402
    ESPEAK_RATE,
    Synthesizer,
    available_accents,
    available_variants,
    default_variants,
)

# the corpus `malsori demo` synthesizes (malsori/commands/demo.py)
DEMO = dict(num_train=3000, num_dev=150, num_test=200, seed=0)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_corpus(cfg: SynthConfig, root: Path) -> tuple[dict, float]:
    out = Path(tempfile.mkdtemp(dir=root))
    c0 = cpu_seconds()
    synthesize_corpus(cfg, out, progress=False)
    return json.loads((out / "synth_stats.json").read_text()), cpu_seconds() - c0


def stage_breakdown(n: int) -> dict[str, float]:
    """CPU milliseconds per second of audio for each stage, in this process."""
    jobs, _ = plan(SynthConfig(num_train=n, num_dev=0, num_test=0, seed=7))
    synth = Synthesizer()
    t = dict(espeak=0.0, resample_trim_level=0.0, flac_write=0.0)
    audio = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for j in jobs:
            t0 = time.process_time()
            raw = synth.espeak(j.spoken, j.voice, j.params)
            t1 = time.process_time()
            wave = resample(raw.astype("float32") / 32768, ESPEAK_RATE, SAMPLE_RATE)
            p = j.params
            wave = trim_and_level(wave, SAMPLE_RATE, p.lead_silence, p.trail_silence, level_db=p.level_db)
            t2 = time.process_time()
            save_audio(Path(tmp) / f"{j.id}.flac", wave)
            t3 = time.process_time()
            t["espeak"] += t1 - t0
            t["resample_trim_level"] += t2 - t1
            t["flac_write"] += t3 - t2
            audio += len(wave) / SAMPLE_RATE
    return {k: 1000 * v / audio for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=400, help="utterances per speed run")
    ap.add_argument("--runs", type=int, default=3, help="speed runs per worker count (median reported)")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wall: dict[int, list[float]] = {1: [], 2: []}
        per_cpu: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.runs):  # interleave 1- and 2-worker runs so load changes hit both alike
            for w in (1, 2):
                cfg = SynthConfig(num_train=args.utts, num_dev=0, num_test=0, seed=100 + r, workers=w)
                s, cpu = run_corpus(cfg, root)
                wall[w].append(s["seconds_synthesized"] / s["synthesis_s"])
                per_cpu[w].append(s["seconds_synthesized"] / cpu)
                print(f"run {r} workers {w}: {wall[w][-1]:.0f}x real time, {per_cpu[w][-1]:.0f} audio s per CPU s "
                      f"({s['seconds_synthesized']:.0f} s audio in {s['synthesis_s']:.1f} s, {cpu:.1f} CPU s)")
        stages = stage_breakdown(min(args.utts, 150))

        t0, c0 = time.perf_counter(), cpu_seconds()
        manifests = synthesize_corpus(SynthConfig(**DEMO, workers=2), root / "demo", progress=False)
        demo_wall, demo_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        demo_audio = json.loads((root / "demo" / "synth_stats.json").read_text())["seconds_synthesized"]
        summary = corpus_summary(manifests)
    load_after = os.getloadavg()[0]
    jobs, _ = plan(SynthConfig(**DEMO))

    wmed = {w: statistics.median(v) for w, v in wall.items()}
    cmed = {w: statistics.median(v) for w, v in per_cpu.items()}
    combos = {s: {j.voice for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    lines = [
        f"Synthesis speed: {args.utts} utterances per run (built-in sentences, random voices and prosody, 16 kHz FLAC "
        f"written), median of {args.runs} runs, 1- and 2-worker runs interleaved in the same invocation. "
        "Wall x real time = seconds of audio / wall seconds, including worker start-up. The 2 cores were shared "
        f"with other jobs (load average {load_before:.1f} at the start, {load_after:.1f} at the end), so wall-clock "
        "numbers are lower bounds; audio seconds per CPU second (this process + workers) is what each fully "
        "available core delivers, and 2 x that is the 2-core projection.",
        "",
        "| workers | wall x real time (median) | wall runs | audio s per CPU s (median) | 2-core projection |",
        "|---:|---:|---|---:|---:|",
        *(f"| {w} | {wmed[w]:.0f} | {', '.join(f'{x:.0f}' for x in wall[w])} | {cmed[w]:.0f} | {2 * cmed[w]:.0f} |"
          for w in (1, 2)),
        "",
        f"Wall 2 workers / 1 worker: {wmed[2] / wmed[1]:.2f}x. CPU ms per second of audio in one process: "
        + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
        + " (eSpeak is loaded afresh for every utterance so that no hidden state leaks between utterances).",
        "",
        f"Default demo corpus (`SynthConfig(num_train=3000, num_dev=150, num_test=200, seed=0)`), synthesized with "
        f"2 workers: {demo_audio / 3600:.2f} h of audio in {demo_wall:.1f} s wall ({demo_audio / demo_wall:.0f}x real "
        f"time), {demo_cpu:.1f} CPU s ({demo_audio / demo_cpu:.0f} audio s per CPU s). eSpeak NG ships "
        f"{len(available_accents())} English accents and {len(available_variants())} voice variants, of which "
        f"{len(default_variants())} are used by default ({len(available_accents()) * len(default_variants())} "
        "accent x variant voices).",
        "",
        "| split | utterances | hours | voices (accent+variant) | accents | variants | distinct sentences "
        "| vocabulary |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {s} | {v['utterances']} | {v['hours']:.3f} | {v['voices']} | {v['accents']} | {v['variants']} | "
          f"{v['sentences']} | {v['vocabulary']} |" for s, v in summary.items()),
        "",
        f"Voices shared between splits: train/dev {len(combos['train'] & combos['dev'])}, "
        f"train/test {len(combos['train'] & combos['test'])}, dev/test {len(combos['dev'] & combos['test'])} "
        "(sentences are disjoint too: each utterance has its own).",
    ]
    record("synthesis", "\n".join(lines))


if __name__ == "__main__":
    main()
