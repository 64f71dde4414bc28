"""Streaming latency report: accuracy, algorithmic latency, compute per chunk, emission delay and first-token
latency of streaming models at several chunk sizes, with and without the carried left context, against their own
full-context decoding; plus constant per-chunk cost over 30 minutes and bounded memory over an hour of audio.

    python benchmarks/bench_streaming.py --model ctc=exp/streaming/conformer_ctc/model \
        --model transducer=exp/streaming/conformer_transducer/model --out docs/streaming

Every utterance is fed through `Recognizer.stream` in 20 ms pieces (as fast as possible); a word's emission time
is the amount of audio received when the word first appeared in the partial result in its final form and stayed.
Reference word end times come from the forced alignment (CTC Viterbi) of the reference text by the CTC model with
full context (`--aligner`). Writes OUT/streaming.md, OUT/results.json and PNG plots.
"""

from __future__ import annotations

import argparse
import difflib
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_asr import REAL_SETS, DATA_ROOT, EvalSet, load_set  # noqa: E402

from malsori.audio import SAMPLE_RATE  # noqa: E402
from malsori.decode.ctc import ctc_forced_align  # noqa: E402
from malsori.decode.options import DecodeOptions  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit, machine  # noqa: E402
from malsori.streaming import StreamConfig  # noqa: E402
from malsori.text import normalize  # noqa: E402

PIECE_S = 0.02  # audio fed per accept_waveform call
NO_ENDPOINT = dict(endpoint_silence_s=1e9, endpoint_idle_s=1e9, max_utterance_s=1e9, keep_snapshots=True)


@dataclass
class Row:
    """One model decoded one way on one set."""

    model: str  # name given with --model
    mode: str  # "full context" or "chunk N ms, left L"
    set_name: str  # test or real-speech set
    chunk_ms: float  # 0 = full context
    left_chunks: int  # carried left context in chunks (-1 = all)
    lookahead_ms: float  # right look-ahead per chunk (Emformer-style copies), 0 = none
    algorithmic_ms: float  # chunk + look-ahead + front-end overhang (full context: the whole utterance, NaN)
    wer: float
    cer: float
    rtf: float  # compute / audio
    ms_per_chunk: float  # median compute per encoder chunk (streaming only)
    delay_median_ms: float = float("nan")  # word emission time − reference word end, median over correct words
    delay_p90_ms: float = float("nan")
    first_token_ms: float = float("nan")  # median over utterances: first partial token − reference start of word 1
    words_timed: int = 0  # correct words whose delay was measured


def reference_times(aligner: Recognizer, wave: np.ndarray, ref: str) -> list[tuple[float, float]]:
    """(start, end) seconds of each reference word from the aligner's full-context CTC forced alignment."""
    tokens = aligner.tokenizer.encode(ref)
    with torch.inference_mode():
        feats, lens = aligner.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        log_probs, _ = aligner.model(aligner.cmvn(feats), lens)
    spans, _ = ctc_forced_align(log_probs[0], tokens)
    starts = aligner._words(tokens, [a for a, _ in spans])
    ends = aligner._words(tokens, [b for _, b in spans])
    return [(s.start, e.end) for s, e in zip(starts, ends)]


def emission_times(snapshots, final_words: list[str], end_s: float) -> list[float]:
    """Audio received when word i first appeared in its final form and stayed so until the end."""
    times = [end_s] * len(final_words)
    for i, word in enumerate(final_words):
        for snap in reversed(snapshots):
            if len(snap.words) > i and snap.words[i] == word:
                times[i] = snap.received_s
            else:
                break
    return times


def stream_set(rec: Recognizer, s: EvalSet, cfg: StreamConfig, ref_times) -> tuple[list[str], list[float], list[float], float, list[float]]:
    """→ (hypotheses, delays s, first-token latencies s, compute s, per-chunk compute s)."""
    hyps, delays, firsts, compute, per_chunk = [], [], [], 0.0, []
    piece = int(PIECE_S * SAMPLE_RATE)
    for wave, ref, times in zip(s.waves, s.refs, ref_times):
        stream = rec.stream(cfg)
        for start in range(0, len(wave), piece):
            frames_before = stream.frames
            t0 = time.perf_counter()
            stream.accept_waveform(wave[start : start + piece])
            dt = time.perf_counter() - t0
            compute += dt
            if stream.frames > frames_before:  # this piece completed a chunk: its time is that chunk's cost
                per_chunk.append(dt)
        t0 = time.perf_counter()
        finals = stream.finish()
        compute += time.perf_counter() - t0
        text = " ".join(f.text for f in finals)
        hyps.append(normalize(text))
        words = text.split()
        emitted = emission_times(stream.snapshots[:-1] if stream.snapshots else [], words, len(wave) / SAMPLE_RATE)
        first = next((snap.received_s for snap in stream.snapshots if snap.words), None)
        ref_words = ref.split()
        if times and first is not None:
            firsts.append(first - times[0][0])
        matcher = difflib.SequenceMatcher(a=ref_words, b=words, autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                delays.append(emitted[block.b + k] - times[block.a + k][1])
    return hyps, delays, firsts, compute, per_chunk


def full_context(rec: Recognizer, s: EvalSet, ref_times) -> tuple[list[str], list[float], list[float], float]:
    """Offline decoding: every word is 'emitted' when the utterance ends (plus nothing for compute)."""
    t0 = time.perf_counter()
    out = rec.transcribe_waves(s.waves, DecodeOptions(), 16)
    compute = time.perf_counter() - t0
    hyps, delays, firsts = [], [], []
    for t, wave, ref, times in zip(out, s.waves, s.refs, ref_times):
        hyps.append(normalize(t.text))
        end = len(wave) / SAMPLE_RATE
        words = t.text.split()
        if times and words:
            firsts.append(end - times[0][0])
        matcher = difflib.SequenceMatcher(a=ref.split(), b=words, autojunk=False)
        for block in matcher.get_matching_blocks():
            delays += [end - times[block.a + k][1] for k in range(block.size)]
    return hyps, delays, firsts, compute


_THREADS = 1  # torch threads per worker
_JOB_CONTEXT: tuple = ()  # (models, sets by name, reference times) shared with the forked workers


def _job(job: tuple[str, str, float, int, float]) -> Row:
    """Decode one set with one model in one mode (chunk_ms 0 = full context) → its Row."""
    name, set_name, chunk_ms, left, ahead = job
    models, sets, ref_times = _JOB_CONTEXT
    rec, s, times = models[name][0], sets[set_name], ref_times[set_name]
    torch.set_num_threads(_THREADS)
    if chunk_ms == 0:
        hyps, delays, firsts, compute = full_context(rec, s, times)
        rates = error_rates(s.refs, hyps)
        return Row(name, "full context", s.name, 0, -1, 0, float("nan"), rates.wer, rates.cer, compute / s.seconds,
                   float("nan"), pct(delays, 50), pct(delays, 90), pct(firsts, 50), len(delays))
    cfg = StreamConfig(chunk_ms=chunk_ms, left_chunks=left, lookahead_ms=ahead, **NO_ENDPOINT)
    hyps, delays, firsts, compute, per_chunk = stream_set(rec, s, cfg, times)
    rates = error_rates(s.refs, hyps)
    mode = f"chunk {chunk_ms:g} ms" + (f" + look-ahead {ahead:g} ms" if ahead else "") + f", left {left}"
    return Row(name, mode, s.name, chunk_ms, left, ahead, chunk_ms + ahead + frontend_ms(rec),
               rates.wer, rates.cer, compute / s.seconds, statistics.median(per_chunk) * 1000,
               pct(delays, 50), pct(delays, 90), pct(firsts, 50), len(delays))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def frontend_ms(rec: Recognizer) -> float:
    """Input the subsampling front-end needs beyond a chunk's last encoder frame, plus the fbank window overhang."""
    sub = rec.model.encoder.subsampling
    cfg = rec.fbank.cfg
    return (sub.min_frames - sub.subsampling_factor) * cfg.frame_shift_ms + (cfg.frame_length_ms - cfg.frame_shift_ms)


def constant_cost(rec: Recognizer, wave: np.ndarray, minutes: float, chunk_ms: float, left: int, probe: int = 50) -> dict:
    """Per-chunk encoder time for the first and the last `probe` chunks of a `minutes`-long stream."""
    encoder = rec.model.encoder
    with torch.inference_mode():
        feats, lens = rec.fbank(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
        feats = rec.cmvn(feats)
    chunk = int(round(chunk_ms / 1000 / (rec.subsampling * rec.frame_shift)))
    step = chunk * encoder.subsampling_factor  # input frames per chunk
    total_chunks = int(minutes * 60 / (chunk_ms / 1000))
    state, times, positions = None, [], []
    for i in range(total_chunks):
        start = (i * step) % max(1, feats.size(1) - step)
        t0 = time.perf_counter()
        enc, state = encoder.forward_chunk(feats[:, start : start + step], state, chunk, left)
        dt = time.perf_counter() - t0
        if enc.size(1) == 0:  # the very first call: not a whole chunk yet (the subsampling needs a few more frames)
            continue
        if i < probe or i >= total_chunks - probe or i % 100 == 0:
            times.append(dt)
            positions.append(i * chunk_ms / 1000 / 60)
    first = statistics.median(times[:probe])
    last = statistics.median(times[-probe:])
    return {"chunk_ms": chunk_ms, "left_chunks": left, "minutes": minutes, "first_ms": first * 1000,
            "last_ms": last * 1000, "ratio": last / first, "cache_frames": int(state.keys.shape[3]),
            "curve": list(zip(positions, [t * 1000 for t in times]))}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def hour_stream(rec: Recognizer, waves: list[np.ndarray], minutes: float, cfg: StreamConfig) -> dict:
    """Stream `minutes` of test utterances separated by 1.5 s of silence with endpointing; sample RSS each minute."""
    gap = np.zeros(int(1.5 * SAMPLE_RATE), dtype=np.float32)
    stream = rec.stream(cfg)
    piece = int(0.32 * SAMPLE_RATE)
    samples, marks, k, t0 = int(minutes * 60 * SAMPLE_RATE), [], 0, time.perf_counter()
    while stream.received < samples:
        audio = np.concatenate([waves[k % len(waves)], gap])
        k += 1
        for start in range(0, len(audio), piece):
            stream.accept_waveform(audio[start : start + piece])
            minute = stream.received / SAMPLE_RATE / 60
            if minute >= len(marks):
                marks.append((round(minute, 2), round(rss_mb(), 1), len(stream.finals), int(stream.state.keys.shape[3])))
    stream.finish()
    return {"minutes": minutes, "utterances_fed": k, "finals": len(stream.finals), "wall_s": time.perf_counter() - t0,
            "rss_mb": marks}


def _save(fig, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plots(rows: list[Row], costs: list[dict], hour: dict | None, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in ((axes[0], "wer", "WER (%)"), (axes[1], "delay_median_ms", "median emission delay (ms)")):
        for model in dict.fromkeys(r.model for r in rows):
            for left, style in ((4, "-o"), (0, "--s")):
                pts = sorted((r.chunk_ms, getattr(r, metric)) for r in rows
                             if r.model == model and r.set_name == "test" and r.chunk_ms > 0 and r.left_chunks == left
                             and r.lookahead_ms == 0)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] * (100 if metric == "wer" else 1) for p in pts], style,
                            label=f"{model}, left {left} chunks")
            full = [r for r in rows if r.model == model and r.set_name == "test" and r.chunk_ms == 0]
            if full and metric == "wer":
                ax.axhline(full[0].wer * 100, linestyle=":", color="gray")
                ax.annotate(f"{model} full context", (ax.get_xlim()[0], full[0].wer * 100), fontsize=7, color="gray")
        ax.set_xlabel("chunk (ms)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Synthesized held-out test: accuracy and emission delay vs chunk size")
    names.append(_save(fig, out, "latency_vs_chunk.png"))
    if any(r.lookahead_ms for r in rows):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        left = max(r.left_chunks for r in rows)  # the carried-memory setting
        for model in dict.fromkeys(r.model for r in rows):
            for ahead, marker in zip(sorted({r.lookahead_ms for r in rows if r.chunk_ms}), "os^vD"):
                pts = sorted((r.algorithmic_ms, r.wer * 100) for r in rows if r.model == model and r.set_name == "test"
                             and r.chunk_ms > 0 and r.lookahead_ms == ahead and r.left_chunks == left)
                if pts:
                    ax.plot(*zip(*pts), "-" + marker, label=f"{model}, look-ahead {ahead:g} ms")
        ax.set_xlabel("algorithmic latency: chunk + look-ahead + front-end (ms)")
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("Spending latency on look-ahead or on bigger chunks")
        names.append(_save(fig, out, "lookahead.png"))
    if costs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in costs:
            xs, ys = zip(*c["curve"])
            ax.plot(xs, ys, ".", markersize=3, label=f"chunk {c['chunk_ms']:g} ms, left {c['left_chunks']}")
        ax.set_xlabel("position in the stream (minutes)")
        ax.set_ylabel("encoder time per chunk (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        names.append(_save(fig, out, "cost_per_chunk.png"))
    if hour:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        mins, rss = [m[0] for m in hour["rss_mb"]], [m[1] for m in hour["rss_mb"]]
        ax.plot(mins, rss, "-o", markersize=3)
        ax.set_xlabel("audio streamed (minutes)")
        ax.set_ylabel("resident memory (MiB)")
        ax.set_ylim(0, max(rss) * 1.2)
        ax.grid(alpha=0.3)
        names.append(_save(fig, out, "memory_over_hour.png"))
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR of a streaming model (repeatable)")
    p.add_argument("--aligner", default=None, help="CTC model giving reference word times (default: the first CTC --model)")
    p.add_argument("--test", default="exp/ref/corpus/test.jsonl", help="held-out synthesized test manifest")
    p.add_argument("--test-limit", type=int, default=100)
    p.add_argument("--real-limit", type=int, default=60, help="speechocean762 utterances (0 = skip)")
    p.add_argument("--chunks", default="160,320,640", help="chunk sizes in ms")
    p.add_argument("--lefts", default="4,0", help="left context in chunks to compare (the carried memory)")
    p.add_argument("--lookaheads", default="0", help="right look-ahead per chunk in ms to compare")
    p.add_argument("--cost-minutes", type=float, default=30.0, help="stream length of the per-chunk cost test (0 = skip)")
    p.add_argument("--hour-minutes", type=float, default=60.0, help="stream length of the memory test (0 = skip)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (the cost and memory tests run alone after)")
    p.add_argument("--out", default="docs/streaming")
    args = p.parse_args()
    global _THREADS
    _THREADS = args.threads
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = (Recognizer.load(path, "cpu"), path)
    ctc = [n for n, (r, _) in models.items() if type(r.model).__name__ == "CTCModel"]
    aligner = Recognizer.load(args.aligner, "cpu") if args.aligner else models[ctc[0]][0]
    sets = [load_set("test", Path(args.test), args.test_limit)]
    if args.real_limit:
        sets.append(load_set("speechocean762", DATA_ROOT / REAL_SETS["speechocean762"][0] / "manifest.jsonl", args.real_limit))
    ref_times = {s.name: [reference_times(aligner, w, r) for w, r in zip(s.waves, s.refs)] for s in sets}
    global _JOB_CONTEXT
    _JOB_CONTEXT = (models, {s.name: s for s in sets}, ref_times)
    jobs = [(name, s.name, 0.0, -1, 0.0) for name in models for s in sets]
    jobs += [(name, s.name, float(c), int(left), float(ahead)) for name in models for s in sets
             for c in args.chunks.split(",") for left in args.lefts.split(",") for ahead in args.lookaheads.split(",")]
    # one job per (model, set, mode), spread over `--workers` processes of `--threads` threads each
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        rows = pool.map(_job, jobs, chunksize=1)
    for r in rows:
        print(r, flush=True)
    first_rec = next(iter(models.values()))[0]
    cost_wave = np.concatenate(sets[0].waves)[: 120 * SAMPLE_RATE]
    costs = []
    if args.cost_minutes:
        costs.append(constant_cost(first_rec, cost_wave, args.cost_minutes, 320, 4))
        costs.append(constant_cost(first_rec, cost_wave, min(args.cost_minutes, 5), 320, -1))
        print(costs, flush=True)
    hour = hour_stream(first_rec, sets[0].waves, args.hour_minutes, StreamConfig(chunk_ms=320, left_chunks=4)) if args.hour_minutes else None
    print(hour, flush=True)
    pngs = plots(rows, costs, hour, out)
    (out / "results.json").write_text(json.dumps({"rows": [asdict(r) for r in rows], "cost": costs, "hour": hour}, indent=1))
    write_report(out, args, models, sets, rows, costs, hour, pngs, frontend_ms(first_rec))


def write_report(out, args, models, sets, rows, costs, hour, pngs, look) -> None:
    cmd = "python benchmarks/bench_streaming.py " + " ".join(sys.argv[1:])
    lines = [
        "# Streaming recognition: accuracy and latency",
        "",
        f"- command: `{cmd}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (commit {git_commit() or '?'})",
        f"- machine: {machine()}; {args.workers} decoding worker process(es) of {args.threads} thread(s) at once (compute times are per worker)",
        "- models: " + "; ".join(f"**{n}** `{p}`" for n, (_, p) in models.items()),
        "- sets: " + "; ".join(f"{s.name}: {len(s.waves)} utterances, {s.seconds / 60:.1f} min ({s.source})" for s in sets),
        f"- streaming: audio fed in {PIECE_S * 1000:g} ms pieces as fast as possible, greedy search, no endpointing "
        "(one result per utterance). Algorithmic latency = chunk + right look-ahead (if any) + "
        f"{look:g} ms (the subsampling convs' look-ahead and the analysis window's overhang).",
        "- emission delay: audio received when a correctly recognized word first appeared in its final form, minus "
        "the word's end in the reference forced alignment (full-context CTC Viterbi of the reference text). For full "
        "context, every word is emitted at the end of the utterance. First-token latency: first partial token minus "
        "the reference start of the first word.",
        "",
    ]
    for s in sets:
        lines += [f"## {s.name}", "",
                  "| model | mode | algorithmic latency (ms) | WER | CER | RTF | compute / chunk (ms) | delay median (ms) | delay p90 (ms) | first token (ms) | words timed |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.set_name != s.name:
                continue
            alg = "utterance" if r.chunk_ms == 0 else f"{r.algorithmic_ms:.0f}"
            per = "–" if r.chunk_ms == 0 else f"{r.ms_per_chunk:.1f}"
            lines.append(f"| {r.model} | {r.mode} | {alg} | {100 * r.wer:.1f}% | {100 * r.cer:.1f}% | {r.rtf:.3f} | {per} | "
                         f"{r.delay_median_ms:.0f} | {r.delay_p90_ms:.0f} | {r.first_token_ms:.0f} | {r.words_timed} |")
        lines.append("")
    if costs:
        lines += ["## Constant cost per chunk", "",
                  "Encoder time per 320 ms chunk near the start of a stream and at its end (medians of 50 chunks).", "",
                  "| left context | stream length | first chunks (ms) | last chunks (ms) | ratio | cached frames per layer |",
                  "|---|---:|---:|---:|---:|---:|"]
        for c in costs:
            left = "unbounded" if c["left_chunks"] < 0 else f"{c['left_chunks']} chunks"
            lines.append(f"| {left} | {c['minutes']:g} min | {c['first_ms']:.2f} | {c['last_ms']:.2f} | {c['ratio']:.2f} | {c['cache_frames']} |")
        lines.append("")
    if hour:
        r = hour["rss_mb"]
        lines += ["## An hour of audio in bounded memory", "",
                  f"{hour['minutes']:g} minutes of test utterances separated by 1.5 s of silence, streamed with endpointing "
                  f"(chunk 320 ms, left 4): {hour['finals']} final results from {hour['utterances_fed']} utterances fed, "
                  f"{hour['wall_s']:.0f} s wall time. Resident memory: {r[1][1] if len(r) > 1 else r[0][1]:.0f} MiB after 1 minute, "
                  f"{r[-1][1]:.0f} MiB after {r[-1][0]:.0f} minutes.", ""]
    lines += [f"![{p}]({p})" for p in pngs]
    (out / "streaming.md").write_text("\n".join(lines) + "\n")
    print(f"report: {out / 'streaming.md'}")


if __name__ == "__main__":
    main()
