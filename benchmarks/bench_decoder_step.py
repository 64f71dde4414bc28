"""Transformer decoder: time of one incremental step (one new token for a beam of hypotheses) at prefix lengths
16 / 64 / 256, before and after the self-attention key/value cache.

- before: what `TransformerDecoder.step` did until the cache: run the whole prefix through every block (the
  memory's cross-attention keys/values precomputed, as then) and keep the newest position's log-probs;
- after: `step` on a state that caches every block's keys/values of the earlier positions: only the newest token runs.
A beam search also reorders the state after each step (`select_state`); "+ reorder" adds that (the cache is copied
with the beam, so a cached step plus its reorder is still O(prefix), where the recompute is O(prefix²) in attention).
Times are medians over repeated steps on random weights and memory, one thread, CPU clock (process time, which other
jobs on the machine barely move) and wall clock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from malsori.nn.transformer import TransformerDecoder  # noqa: E402
from malsori.tokenizer import SPECIAL_IDS  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median CPU ms, median wall ms) of `fn()` over `repeats` calls after one warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return 1000 * statistics.median(cpu), 1000 * statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="16,64,256", help="prefix lengths (tokens read before the new one)")
    ap.add_argument("--beam", type=int, default=8, help="hypotheses stepped together")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--frames", type=int, default=250, help="encoder frames of the memory (10 s at x4 subsampling)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--record", action="store_true", help="write the result into docs/benchmarks.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = args.beam
    dec = TransformerDecoder(args.vocab, args.d_model, args.d_model, args.layers, args.heads, dropout=0.0,
                             attention_dropout=0.0).eval()
    memory, lens = torch.randn(n, args.frames, args.d_model), torch.full((n,), args.frames)
    reorder = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    load_before = os.getloadavg()[0]
    rows = []
    with torch.inference_mode():
        for length in [int(x) for x in args.lengths.split(",")]:
            ys = torch.randint(3, args.vocab, (n, length + 1))
            ys[:, 0] = SPECIAL_IDS.sos
            state = dec.init_state(memory, lens)
            for i in range(length):  # the cache of the `length` tokens before the new one (not timed)
                _, state = dec.step(ys[:, : i + 1], state, memory, lens)
            full_lens = torch.full((n,), length + 1)
            old_state = {"memory_kv": state["memory_kv"], "attn": state["attn"]}

            def before() -> None:
                logits, weights = dec._run(memory, lens, ys, full_lens, state["memory_kv"])
                logits[:, -1].float().log_softmax(-1)

            def before_reorder() -> None:
                before()
                dec.select_state(old_state, reorder)

            def after() -> None:
                dec.step(ys, state, memory, lens)

            def after_reorder() -> None:
                _, new = dec.step(ys, state, memory, lens)
                dec.select_state(new, reorder)

            times = [timed(fn, args.repeats) for fn in (before, after, before_reorder, after_reorder)]
            rows.append((length, times))
            print(length, " ".join(f"{c:.2f}/{w:.2f}" for c, w in times), flush=True)
    load_after = os.getloadavg()[0]

    lines = [
        f"One decoder step for a beam of {n} hypotheses: Transformer decoder with {args.layers} blocks, d_model "
        f"{args.d_model}, {args.heads} heads, vocabulary {args.vocab}, memory of {args.frames} encoder frames, random "
        f"weights; median of {args.repeats} steps, 1 thread. Before = recompute the whole prefix (the step before the "
        "cache, memory keys/values precomputed as then); after = the cached step. '+ reorder' adds the beam's "
        "`select_state` of the decoder state (the cache included).", "",
        "| prefix (tokens) | before: step CPU ms (wall) | after: step CPU ms (wall) | speed-up | before + reorder | "
        "after + reorder | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for length, ((bc, bw), (ac, aw), (brc, brw), (arc, arw)) in rows:
        lines.append(f"| {length} | {bc:.2f} ({bw:.2f}) | {ac:.2f} ({aw:.2f}) | {bc / ac:.1f}x | {brc:.2f} ({brw:.2f}) | "
                     f"{arc:.2f} ({arw:.2f}) | {brc / arc:.1f}x |")
    lines += ["", f"1-minute load average before/after the run: {load_before:.1f} / {load_after:.1f} (2 cores; other "
              "jobs were running, a training run among them, so wall times are noisier than CPU times)."]
    body = "\n".join(lines)
    print(body)
    if args.record:
        from _record import record

        record("decoder_step", body)


if __name__ == "__main__":
    main()
