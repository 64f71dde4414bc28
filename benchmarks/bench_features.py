"""Filterbank speed: batched malsori vs per-utterance malsori vs kaldi-native-fbank, side by side in one run.

Usage: python benchmarks/bench_features.py [--utts 200] [--reps 5] [--batch 32] [--threads 1 2] [--no-record]
Audio: the first N utterances of speechocean762_test_sample from /work/shared/data (synthetic chirps if absent).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._record import record  # noqa: E402
from malsori.audio import load_audio  # noqa: E402
from malsori.features import Fbank, FbankConfig, compute_fbank  # noqa: E402

SO762 = Path("/work/shared/data/speechocean762_test_sample")


def load_waves(n: int) -> tuple[list[np.ndarray], str]:
    """n utterances of real speech, or synthetic 2–6 s chirps when the shared data is absent."""
    manifest = SO762 / "manifest.jsonl"
    if manifest.exists():
        lines = manifest.read_text().splitlines()[:n]
        return [load_audio(SO762 / json.loads(line)["audio"]) for line in lines], "speechocean762_test_sample"
    rng = np.random.default_rng(0)
    waves = []
    for _ in range(n):
        t = np.arange(int(rng.uniform(2, 6) * 16000)) / 16000
        waves.append((0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return waves, "synthetic chirps"


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to try")
    ap.add_argument("--no-record", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    args = ap.parse_args()

    waves, source = load_waves(args.utts)
    seconds = sum(w.size for w in waves) / 16000
    cfg = FbankConfig()
    fbank = Fbank(cfg)

    # batched: utterances sorted by length and padded into batches (as the duration-bucketed loader does)
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)
    batches = []
    for s in range(0, len(order), args.batch):
        chunk = [waves[i] for i in order[s : s + args.batch]]
        lengths = torch.tensor([w.size for w in chunk])
        padded = torch.zeros(len(chunk), int(lengths.max()))
        for j, w in enumerate(chunk):
            padded[j, : w.size] = torch.from_numpy(w)
        batches.append((padded, lengths))

    def malsori_batched() -> None:
        with torch.inference_mode():
            for padded, lengths in batches:
                fbank(padded, lengths)

    def malsori_single() -> None:
        for w in waves:
            compute_fbank(w, cfg)

    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = cfg.num_mel_bins
    scaled = [(w * cfg.input_scale).tolist() for w in waves]  # knf takes a Python sequence; converted outside the timing

    def kaldi_native() -> None:
        for w in scaled:
            fb = knf.OnlineFbank(opts)
            fb.accept_waveform(16000, w)
            fb.input_finished()
            np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, fn in [
            (f"malsori Fbank, batched ({args.batch}/batch, {threads} thread{'s' * (threads > 1)})", malsori_batched),
            (f"malsori compute_fbank, per utterance ({threads} thread{'s' * (threads > 1)})", malsori_single),
        ]:
            rows.append((name, median_time(fn, args.reps)))
            print(f"{name}: {rows[-1][1]:.3f} s, {seconds / rows[-1][1]:.0f}x real time", flush=True)
    rows.append(("kaldi-native-fbank OnlineFbank, per utterance (1 thread, C++)", median_time(kaldi_native, args.reps)))
    print(f"{rows[-1][0]}: {rows[-1][1]:.3f} s, {seconds / rows[-1][1]:.0f}x real time", flush=True)

    knf_time = rows[-1][1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = [
        f"Log-mel fbank (80 bins, Kaldi defaults, dither 0) on {len(waves)} utterances of {source}, "
        f"{seconds / 60:.1f} min of audio; median of {args.reps} runs after a warm-up, all in one run. Input waveforms "
        "are already decoded in memory (and, for kaldi-native-fbank, already converted to the Python list it takes); "
        f"its time includes reading frames back with get_frame. Load average at the end: {load} "
        "(other processes shared the cores).",
        "",
        "| implementation | median time (s) | × real time | speed vs kaldi-native-fbank |",
        "|---|---:|---:|---:|",
    ]
    body += [f"| {name} | {t:.3f} | {seconds / t:.0f} | {knf_time / t:.2f}× |" for name, t in rows]
    if not args.no_record:
        record("features", "\n".join(body))


if __name__ == "__main__":
    main()
