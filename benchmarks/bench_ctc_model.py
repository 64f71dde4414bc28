"""Conformer-CTC speed on CPU: training throughput (audio s per wall s) and inference real-time factor.

Random 80-dim features at 100 frames/s stand in for real audio (speed does not depend on the values).
Inference time covers the encoder forward and the search, not feature extraction.
Run: python benchmarks/bench_ctc_model.py [--threads 2] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import record  # noqa: E402

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search  # noqa: E402
from malsori.models import ModelConfig, build_model  # noqa: E402
from malsori.nn import ConformerConfig  # noqa: E402

FRAMES_PER_SECOND = 100
VOCAB = 256


def median_time(fn, repeats: int, warmup: int) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_train(model: torch.nn.Module, batch: int, seconds: float, steps: int) -> float:
    """Audio seconds trained per wall second: forward + CTC loss + backward + AdamW step."""
    frames = int(seconds * FRAMES_PER_SECOND)
    feats = torch.randn(batch, frames, 80)
    lengths = torch.full((batch,), frames)
    targets = torch.randint(1, VOCAB, (batch, int(4 * seconds)))  # ~4 tokens per second
    target_lens = torch.full((batch,), targets.size(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss, _ = model.compute_loss(feats, lengths, targets, target_lens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch * seconds / median_time(step, steps, warmup=2)


def bench_infer(model: torch.nn.Module, seconds: float, repeats: int) -> dict[str, float]:
    """Wall seconds for one utterance: encoder forward, greedy search, beam-8 search."""
    frames = int(seconds * FRAMES_PER_SECOND)
    feats, lengths = torch.randn(1, frames, 80), torch.tensor([frames])
    model.eval()
    with torch.no_grad():
        fwd = median_time(lambda: model(feats, lengths), repeats, warmup=1)
        log_probs, out_lens = model(feats, lengths)
    greedy = median_time(lambda: ctc_greedy(log_probs, out_lens), repeats, warmup=1)
    beam = median_time(lambda: ctc_prefix_beam_search(log_probs, out_lens, beam_size=8), repeats, warmup=1)
    return {"forward": fwd, "greedy": greedy, "beam": beam}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per variant (after 2 warm-up)")
    parser.add_argument("--factors", default="4,6,8", help="subsampling factors to compare (4 = default config)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, train_seconds, infer_seconds = 8, 10.0, 20.0
    load_before = os.getloadavg()[0]
    rows = []
    for factor in [int(f) for f in args.factors.split(",")]:
        cfg = ModelConfig(conformer=ConformerConfig(subsampling_factor=factor))
        model = build_model(cfg, input_dim=80, vocab_size=VOCAB)
        params = sum(p.numel() for p in model.parameters())
        speed = bench_train(model, batch, train_seconds, args.steps)
        inf = bench_infer(model, infer_seconds, repeats=5)
        rows.append((factor, params, speed, inf))
        print(f"x{factor}: {params / 1e6:.2f}M params, train {speed:.1f}x real time, "
              f"forward {inf['forward']:.3f}s greedy {inf['greedy'] * 1e3:.1f}ms beam8 {inf['beam'] * 1e3:.1f}ms", flush=True)
    load_after = os.getloadavg()[0]
    c = ConformerConfig()
    lines = [
        f"Default Conformer-CTC (d_model={c.d_model}, {c.num_layers} layers, {c.num_heads} heads, ff x{c.ff_expansion}, "
        f"kernel {c.conv_kernel}, dropout {c.dropout}, front-end {c.subsampling_channels} channels, {VOCAB}-token head), "
        f"{args.threads} CPU threads, random 80-dim features at 100 frames/s. Training: batches of {batch} x "
        f"{train_seconds:.0f} s, forward + CTC loss + backward + AdamW step, median of {args.steps} steps after 2 warm-up. "
        f"Inference: one {infer_seconds:.0f} s utterance, batch 1, median of 5; RTF = (encoder forward + search) / "
        f"audio duration, feature extraction excluded. Targets: training >= 80x real time, RTF <= 0.01.",
        "",
        "| subsampling | params | train (x real time) | forward (s) | greedy search (ms) | beam-8 search (ms) | RTF greedy | RTF beam 8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for factor, params, speed, inf in rows:
        lines.append(
            f"| x{factor}{' (default)' if factor == c.subsampling_factor else ''} | {params / 1e6:.2f}M | {speed:.1f} | "
            f"{inf['forward']:.3f} | {inf['greedy'] * 1e3:.1f} | {inf['beam'] * 1e3:.1f} | "
            f"{(inf['forward'] + inf['greedy']) / infer_seconds:.4f} | {(inf['forward'] + inf['beam']) / infer_seconds:.4f} |"
        )
    lines += ["", f"1-minute load average before/after the run: {load_before:.1f} / {load_after:.1f} "
              f"(other jobs on this {os.cpu_count()}-core machine slow the numbers when it exceeds the core count)."]
    record("ctc_model", "\n".join(lines))


if __name__ == "__main__":
    main()
