"""Conformer-CTC speed on CPU: training throughput (audio s per wall s) and inference real-time factor.

Random 80-dim features at 100 frames/s stand in for real audio (speed does not depend on the values).
Inference time covers the encoder forward and the search, not feature extraction. The subsampling variants are
timed in interleaved rounds so that load from other jobs hits them alike.
Run: python benchmarks/bench_ctc_model.py [--threads 2] [--steps 5] [--factors 4,6,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import record  # noqa: E402

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search  # noqa: E402
from malsori.models import ModelConfig, build_model  # noqa: E402
from malsori.nn import ConformerConfig  # noqa: E402

FRAMES_PER_SECOND = 100
VOCAB = 256
BATCH, TRAIN_SECONDS, INFER_SECONDS = 8, 10.0, 20.0


def train_step(model: torch.nn.Module) -> Callable[[], None]:
    """One forward + CTC loss + backward + AdamW step on a random batch of BATCH x TRAIN_SECONDS."""
    frames = int(TRAIN_SECONDS * FRAMES_PER_SECOND)
    feats, lengths = torch.randn(BATCH, frames, 80), torch.full((BATCH,), frames)
    targets = torch.randint(1, VOCAB, (BATCH, int(4 * TRAIN_SECONDS)))  # ~4 tokens per second
    target_lens = torch.full((BATCH,), targets.size(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        loss, _ = model.compute_loss(feats, lengths, targets, target_lens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def infer_parts(model: torch.nn.Module) -> dict[str, Callable[[], object]]:
    """Encoder forward, greedy search and beam-8 search on one INFER_SECONDS utterance."""
    frames = int(INFER_SECONDS * FRAMES_PER_SECOND)
    feats, lengths = torch.randn(1, frames, 80), torch.tensor([frames])
    model.eval()

    def forward():
        with torch.no_grad():
            return model(feats, lengths)

    log_probs, out_lens = forward()
    return {
        "forward": forward,
        "greedy": lambda: ctc_greedy(log_probs, out_lens),
        "beam": lambda: ctc_prefix_beam_search(log_probs, out_lens, beam_size=8),
    }


def interleaved_medians(fns: dict, repeats: int, warmup: int, clock=time.perf_counter) -> dict:
    """Median seconds of each function, timed round-robin so every one sees the same background load."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = clock()
            fn()
            times[key].append(clock() - start)
    return {key: statistics.median(ts) for key, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant (after 2 warm-up)")
    parser.add_argument("--factors", default="4,6,8", help="subsampling factors to compare (4 = default config)")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    factors = [int(f) for f in args.factors.split(",")]
    models = {f: build_model(ModelConfig(conformer=ConformerConfig(subsampling_factor=f)), 80, VOCAB) for f in factors}
    params = {f: sum(p.numel() for p in m.parameters()) for f, m in models.items()}

    # One thread, timed by this process's CPU clock: what the arithmetic costs, whatever else runs here.
    torch.set_num_threads(1)
    cpu_train = interleaved_medians({f: train_step(m) for f, m in models.items()}, args.steps, 1, time.process_time)
    cpu_fwd = interleaved_medians({f: infer_parts(m)["forward"] for f, m in models.items()}, 5, 1, time.process_time)

    torch.set_num_threads(args.threads)
    train = interleaved_medians({f: train_step(m) for f, m in models.items()}, args.steps, 2)
    parts = {(f, k): fn for f, m in models.items() for k, fn in infer_parts(m).items()}
    infer = interleaved_medians(parts, 5, 1)
    load_after = os.getloadavg()[0]

    c = ConformerConfig()
    audio = BATCH * TRAIN_SECONDS
    lines = [
        f"Default Conformer-CTC (d_model={c.d_model}, {c.num_layers} layers, {c.num_heads} heads, ff x{c.ff_expansion}, "
        f"kernel {c.conv_kernel}, dropout {c.dropout}, front-end {c.subsampling_channels} channels, {VOCAB}-token head) "
        f"and the same with x6 / x8 subsampling; random 80-dim features at 100 frames/s. Training: batches of {BATCH} x "
        f"{TRAIN_SECONDS:.0f} s, forward + CTC loss + backward + AdamW step, median of {args.steps} steps. Inference: one "
        f"{INFER_SECONDS:.0f} s utterance, batch 1, median of 5; RTF = (encoder forward + search) / audio duration, "
        f"feature extraction excluded. Targets: training >= 80x real time, RTF <= 0.01.",
        "",
        f"| subsampling | params | train, {args.threads} threads, wall (x real time) | train, 1 thread, CPU clock "
        f"(x real time) | forward (s) | greedy search (ms) | beam-8 search (ms) | RTF greedy | RTF beam 8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in factors:
        fwd, greedy, beam = infer[(f, "forward")], infer[(f, "greedy")], infer[(f, "beam")]
        lines.append(
            f"| x{f}{' (default)' if f == c.subsampling_factor else ''} | {params[f] / 1e6:.2f}M | {audio / train[f]:.1f} | "
            f"{audio / cpu_train[f]:.1f} | {fwd:.3f} | {greedy * 1e3:.1f} | {beam * 1e3:.1f} | "
            f"{(fwd + greedy) / INFER_SECONDS:.4f} | {(fwd + beam) / INFER_SECONDS:.4f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "The 1-thread column is timed by the process CPU clock, so other jobs on the machine barely move it; "
        f"1-thread encoder forward of {INFER_SECONDS:.0f} s audio (CPU s): "
        + ", ".join(f"x{f} {cpu_fwd[f]:.3f}" for f in factors) + ".",
        "",
        f"1-minute load average before/after the run: {load_before:.1f} / {load_after:.1f} "
        f"({os.cpu_count()} cores; wall-clock numbers drop when other jobs push it past the core count).",
    ]
    record("ctc_model", "\n".join(lines))


if __name__ == "__main__":
    main()
