"""Serving load: N concurrent real-time clients against `malsori serve` in its own process, N rising until the
server cannot keep up; per N the p50/p95 latency of partial and final results, the server's CPU and peak resident
memory; then one long stream (fast) to show memory stays flat as a stream grows.

    nice -n 19 python benchmarks/bench_serve.py --model en-small --levels 1,2,4,8,12,16 --seconds 20

Each client streams the demo clips (with 1.5 s of silence after each, so endpoints fire) in 100 ms messages at real
time. A result's latency is the time from sending the last audio it covers (`received_s`) to receiving it. The
server is saturated when the p95 final latency passes `--saturated` seconds; the run stops at the first such N.
First, the decoding work alone (the engine in this process, CPU time, so a shared machine's load does not count).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from malsori.audio import SAMPLE_RATE, load_audio
from malsori.commands.demo import DEMO_AUDIO
from malsori.data.manifest import read_manifest
from malsori.provenance import git_commit, machine
from malsori.serve.client import talk

TICK = os.sysconf("SC_CLK_TCK")


def _proc(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, resident KiB, peak resident KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _audio(seconds: float, shift: int) -> np.ndarray:
    """Demo clips (starting at clip `shift`), each followed by 1.5 s of silence, repeated to `seconds`."""
    utts = read_manifest(DEMO_AUDIO, strict=True).utterances
    clips = [load_audio(DEMO_AUDIO.parent / u.audio) for u in utts]
    gap = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    parts, n, k = [], 0, shift
    while n < seconds * SAMPLE_RATE:
        parts += [clips[k % len(clips)], gap]
        n, k = n + len(clips[k % len(clips)]) + len(gap), k + 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


async def _round(url: str, n: int, seconds: float, speed: float) -> list:
    return await asyncio.gather(*(talk(url, _audio(seconds, i), speed=speed) for i in range(n)))


def engine_cost(model: str, levels: list[int], seconds: float) -> list[dict]:
    """The decoding work alone, in this process on one thread: N streams through the server's engine, a step per
    `step_samples` of audio each; CPU seconds (process time, so other load on the machine does not count) per second
    of audio, and the N at which one decoding thread would saturate."""
    import torch

    import malsori
    from malsori.serve.config import ServeConfig
    from malsori.serve.engine import make_engine

    torch.set_num_threads(1)
    cfg = ServeConfig()
    rec = malsori.load(model, "cpu")
    engine = make_engine(rec, cfg.stream, cfg.partial_interval_s, cfg.max_batch)
    rows = []
    for n in levels:
        waves = [_audio(seconds, i) for i in range(n)]
        states = [engine.open() for _ in range(n)]
        step = engine.step_samples
        t0 = time.process_time()
        for start in range(0, len(waves[0]), step):
            last = start + step >= len(waves[0])
            engine.step([(st, w[start : start + step], last) for st, w in zip(states, waves)])
        cpu = time.process_time() - t0
        per = cpu / (n * seconds)
        rows.append({"streams": n, "cpu_per_audio_s": per, "saturates_at": 1.0 / per})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _measure(pid: int, url: str, n: int, seconds: float, speed: float = 1.0) -> dict:
    cpu0, _, _ = _proc(pid)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    sessions = asyncio.run(_round(url, n, seconds, speed))
    wall = time.perf_counter() - t0
    cpu1, rss, peak = _proc(pid)
    partial = [x for s in sessions for x in s.latencies(final=False)]
    final = [x for s in sessions for x in s.latencies(final=True)]
    return {"clients": n, "audio_s": n * seconds, "wall_s": round(wall, 1), "server_cpu": round((cpu1 - cpu0) / wall, 2),
            "partials": len(partial), "partial_p50": _pct(partial, 50), "partial_p95": _pct(partial, 95),
            "finals": len(final), "final_p50": _pct(final, 50), "final_p95": _pct(final, 95),
            "rss_mib": rss / 1024, "peak_rss_mib": peak / 1024, "ok": all(s.done and s.code == 1000 for s in sessions),
            "server_cpu_per_audio_s": (cpu1 - cpu0) / (n * seconds), "loadavg": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--levels", default="1,2,4,8,12,16", help="numbers of concurrent clients, rising")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per client per level (real time)")
    ap.add_argument("--threads", type=int, default=1, help="the server's decoding threads")
    ap.add_argument("--saturated", type=float, default=2.0, help="p95 final latency (s) that counts as saturated")
    ap.add_argument("--long", type=float, default=300.0, help="seconds of the long stream (sent at 10x real time)")
    ap.add_argument("--engine-levels", default="1,4,16,32", help="streams for the engine-only cost ('' to skip)")
    ap.add_argument("--out", type=Path, default=Path("serve_bench.json"))
    args = ap.parse_args()
    engine_rows = engine_cost(args.model, [int(x) for x in args.engine_levels.split(",") if x], args.seconds)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "malsori.cli", "serve", args.model, "--port", str(port),
                               "--threads", str(args.threads), "--max-connections", "256", "--idle-timeout", "120"],
                              stderr=subprocess.DEVNULL)
    url = f"ws://127.0.0.1:{port}"
    rows, load = [], os.getloadavg()
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        for n in (int(x) for x in args.levels.split(",")):
            row = _measure(server.pid, url, n, args.seconds)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if row["final_p95"] > args.saturated:
                break
        # one long stream at 10x real time: resident memory sampled while it grows
        samples: list[tuple[float, float]] = []

        async def long_stream():
            task = asyncio.create_task(talk(url, _audio(args.long, 0), speed=10.0, keepalive=False))
            t0 = time.perf_counter()
            while not task.done():
                samples.append((round((time.perf_counter() - t0) * 10.0, 1), _proc(server.pid)[1] / 1024))
                await asyncio.sleep(1.0)
            return await task

        s = asyncio.run(long_stream())
    finally:
        server.terminate()
        server.wait(30)
    long = {"audio_s": args.long, "rss_mib_by_audio_s": samples, "finals": len(s.finals), "ok": s.done and s.code == 1000,
            "close": s.code}
    report = {"commit": git_commit(), "machine": machine(), "loadavg_before": load, "loadavg_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": args.model, "threads": args.threads,
              "engine": engine_rows, "levels": rows, "long_stream": long}
    args.out.write_text(json.dumps(report, indent=1))
    print("| streams in the engine | decoding CPU s per audio s | one thread saturates at |")
    print("| --- | --- | --- |")
    for r in engine_rows:
        print(f"| {r['streams']} | {r['cpu_per_audio_s']:.4f} | {r['saturates_at']:.0f} streams |")
    print()
    print("| clients | load avg | wall s / audio s | server CPU (cores) | server CPU s per audio s | partial p50 / p95 (s) | "
          "final p50 / p95 (s) | peak RSS (MiB) | all closed normally |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clients']} | {r['loadavg']:.1f} | {r['wall_s'] / args.seconds:.2f} | {r['server_cpu']:.2f} | "
              f"{r['server_cpu_per_audio_s']:.4f} | {r['partial_p50']:.2f} / {r['partial_p95']:.2f} | "
              f"{r['final_p50']:.2f} / {r['final_p95']:.2f} | {r['peak_rss_mib']:.0f} | {r['ok']} |")
    rss = [m for _, m in samples]
    if rss:
        print(f"long stream: {args.long:.0f} s of audio, {len(s.finals)} finals, closed {s.code}, RSS {rss[0]:.0f} → max "
              f"{max(rss):.0f} → last {rss[-1]:.0f} MiB (median {statistics.median(rss):.0f})")


if __name__ == "__main__":
    main()
