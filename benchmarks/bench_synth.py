"""Synthesis speed (x real time, 1 and 2 workers, side by side) and the size/diversity of the demo's default corpus.

    python benchmarks/bench_synth.py [--utts 400] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._record import record  # noqa: E402
from malsori.audio import save_audio  # noqa: E402
from malsori.data.synth import (  # noqa: E402
    SAMPLE_RATE,
    SynthConfig,
    Synthesizer,
    available_accents,
    available_variants,
    corpus_summary,
    plan,
    synthesize_corpus,
)

# the corpus `malsori demo` synthesizes (malsori/commands/demo.py)
DEMO = dict(num_train=3000, num_dev=150, num_test=200, seed=0)


def run_corpus(cfg: SynthConfig, root: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=root))
    synthesize_corpus(cfg, out, progress=False)
    return json.loads((out / "synth_stats.json").read_text())


def stage_breakdown(n: int) -> dict[str, float]:
    """Seconds per second of audio for each stage, in this process."""
    from malsori.audio import resample
    from malsori.data.synth import ESPEAK_RATE, trim_and_level

    jobs, _ = plan(SynthConfig(num_train=n, num_dev=0, num_test=0, seed=7))
    synth = Synthesizer()
    t = dict(espeak=0.0, resample_trim=0.0, flac=0.0)
    audio = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for j in jobs:
            t0 = time.perf_counter()
            raw = synth.espeak(j.spoken, j.voice, j.params)
            t1 = time.perf_counter()
            wave = trim_and_level(resample(raw.astype("float32") / 32768, ESPEAK_RATE, SAMPLE_RATE), SAMPLE_RATE, j.params)
            t2 = time.perf_counter()
            save_audio(Path(tmp) / f"{j.id}.flac", wave)
            t3 = time.perf_counter()
            t["espeak"] += t1 - t0
            t["resample_trim"] += t2 - t1
            t["flac"] += t3 - t2
            audio += len(wave) / SAMPLE_RATE
    return {k: v / audio for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=400, help="utterances per speed run")
    ap.add_argument("--runs", type=int, default=3, help="speed runs per worker count (median reported)")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        speeds: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.runs):  # interleave 1- and 2-worker runs so load changes hit both alike
            for w in (1, 2):
                s = run_corpus(SynthConfig(num_train=args.utts, num_dev=0, num_test=0, seed=100 + r, workers=w), root)
                speeds[w].append(s["seconds_synthesized"] / s["synthesis_s"])
                print(f"run {r} workers {w}: {speeds[w][-1]:.0f}x real time ({s['seconds_synthesized']:.0f} s audio in {s['synthesis_s']:.1f} s)")
        stages = stage_breakdown(min(args.utts, 150))

        t0 = time.perf_counter()
        demo_dir = root / "demo"
        manifests = synthesize_corpus(SynthConfig(**DEMO, workers=2), demo_dir, progress=False)
        demo_elapsed = time.perf_counter() - t0
        demo_stats = json.loads((demo_dir / "synth_stats.json").read_text())
        summary = corpus_summary(manifests)
        jobs, _ = plan(SynthConfig(**DEMO))

    load_after = os.getloadavg()[0]
    med = {w: statistics.median(v) for w, v in speeds.items()}
    combos = {s: {j.voice for j in jobs if j.split == s} for s in ("train", "dev", "test")}
    lines = [
        f"Synthesis speed: {args.utts} utterances per run (built-in sentences, random voices and prosody), 16 kHz FLAC "
        f"written; x real time = seconds of audio / wall seconds including worker start-up; median of {args.runs} runs, "
        f"1- and 2-worker runs interleaved in the same invocation. Machine load average (1 min) {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end: other jobs shared these cores, so these are lower bounds.",
        "",
        "| workers | x real time (median) | runs |",
        "|---:|---:|---|",
        *(f"| {w} | {med[w]:.0f} | {', '.join(f'{x:.0f}' for x in speeds[w])} |" for w in (1, 2)),
        "",
        f"2 workers / 1 worker: {med[2] / med[1]:.2f}x. Time per second of audio in one process: "
        + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in stages.items())
        + " (eSpeak is reloaded for every utterance so that no hidden state leaks between utterances).",
        "",
        f"Default demo corpus (`SynthConfig(num_train=3000, num_dev=150, num_test=200, seed=0)`): synthesized with 2 workers "
        f"in {demo_elapsed:.1f} s ({demo_stats['seconds_synthesized'] / demo_stats['synthesis_s']:.0f}x real time). "
        f"eSpeak NG offers {len(available_accents())} English accents x {len(available_variants())} voice variants.",
        "",
        "| split | utterances | hours | voices (accent+variant) | accents | variants | distinct sentences | vocabulary |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {s} | {v['utterances']} | {v['hours']:.3f} | {v['voices']} | {v['accents']} | {v['variants']} | "
          f"{v['sentences']} | {v['vocabulary']} |" for s, v in summary.items()),
        "",
        f"Voice combinations shared between splits: train/dev {len(combos['train'] & combos['dev'])}, "
        f"train/test {len(combos['train'] & combos['test'])}, dev/test {len(combos['dev'] & combos['test'])}; "
        f"train has {len(combos['train'])} combinations available, dev {len(combos['dev'])}, test {len(combos['test'])}.",
    ]
    record("synthesis", "\n".join(lines))


if __name__ == "__main__":
    main()
