"""Peak memory of transcribing long audio: `malsori transcribe` on 10 minutes and 2 hours of 44.1 kHz stereo WAV, and
the Recognizer API on the same files and on 8 hours generated on the fly (never stored). Each case runs in a fresh
process; peak RSS is the kernel's maximum resident set size of that process (wait4 rusage). The model is a small
randomly initialized streaming Conformer-CTC made here: what it decodes does not matter for memory.

    python benchmarks/bench_memory.py [--hours 2] [--gen-hours 8] [--compare-tree /path/to/other/checkout] [--no-record]

The 8-hour source is a generator of 44.1 kHz stereo blocks (a fixed 10 s block of noise under a slowly varying
gain) fed through the same streaming resampler, segment cutter and batched decoding as a file; only file reading
differs, and that is what the file cases measure. `--compare-tree` also runs the CLI file cases with another
checkout's code (e.g. one from before block reading) for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATE, CHANNELS = 44100, 2


def make_model(folder: Path) -> Path:
    import torch

    from malsori.features import FbankConfig, GlobalCMVN
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.chunked import ChunkConfig
    from malsori.nn.conformer import ConformerConfig
    from malsori.pretrained import save_model_dir
    from malsori.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer("char", ["the quick brown fox jumps over the lazy dog"])
    cfg = ModelConfig(encoder="conformer", head="ctc", conformer=ConformerConfig(
        d_model=64, num_layers=2, num_heads=4, conv_kernel=15, dropout=0.0, chunk=ChunkConfig(causal=True)))
    return save_model_dir(folder / "model", build_model(cfg, 80, tok.vocab_size), cfg, FbankConfig(), tok, GlobalCMVN(80))


def generated_blocks(seconds: float, block_seconds: float = 10.0):
    """44.1 kHz stereo float32 blocks, mixed down to mono as a file reader does: noise under a gain that dips every
    few seconds (quiet points to cut at), made block by block and never held whole."""
    import numpy as np

    n = int(block_seconds * RATE)
    base = np.random.default_rng(0).standard_normal((n, CHANNELS)).astype(np.float32) * 0.1
    t = np.arange(n) / RATE
    total = int(seconds * RATE)
    for k, start in enumerate(range(0, total, n)):
        gain = (0.55 + 0.45 * np.sin(2 * np.pi * (t + k * block_seconds) / 7.0)).astype(np.float32)
        x = base[: min(n, total - start)] * gain[: min(n, total - start), None]
        yield np.ascontiguousarray(x.mean(axis=1), dtype=np.float32)


def write_wav(path: Path, seconds: float) -> None:
    import soundfile as sf

    with sf.SoundFile(str(path), "w", RATE, CHANNELS, subtype="PCM_16") as f:
        for block in generated_blocks(seconds):
            f.write(block[:, None].repeat(CHANNELS, axis=1))


def child_api(model: str, source: str) -> None:
    """In this (fresh) process: transcribe one source with the API; print the result's length and the RSS."""
    import torch

    import malsori
    from malsori.audio import resample_blocks
    from malsori.pretrained import bound_heap

    torch.set_num_threads(1)
    bound_heap()  # as the transcribe command does
    rec = malsori.load(model, "cpu")
    kind, _, arg = source.partition(":")
    item = arg if kind == "file" else resample_blocks(generated_blocks(float(arg)), RATE)
    t0 = time.perf_counter()
    (t,) = list(rec.transcribe_each([item]))
    print(json.dumps({"audio_s": t.duration, "words": len(t.words), "seconds": time.perf_counter() - t0}))


def measure(cmd: list[str], env_path: str) -> dict:
    """Run `cmd` in a fresh process (wait4: the rusage is this child's alone): its peak RSS (MiB), wall time and
    last line of output."""
    env = {**os.environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True, cwd=env_path)  # `-m` puts the cwd first
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {err.read()[-2000:]}")
        lines = out.read().strip().splitlines()
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - t0, "last": lines[-1] if lines else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-minutes", type=float, default=10.0, help="length of the short file")
    ap.add_argument("--hours", type=float, default=2.0, help="length of the long file")
    ap.add_argument("--gen-hours", type=float, default=8.0, help="length of the audio generated on the fly")
    ap.add_argument("--compare-tree", type=Path, default=None, help="also run the CLI file cases with this checkout's code")
    ap.add_argument("--no-record", action="store_true", help="print, do not write docs/benchmarks.md")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "SOURCE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_api(*args.child)

    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        tmp = Path(tmp)
        model = make_model(tmp)
        files = {}
        for label, seconds in ((f"{args.short_minutes:g} min", 60 * args.short_minutes), (f"{args.hours:g} h", 3600 * args.hours)):
            files[label] = tmp / f"{label.replace(' ', '')}.wav"
            write_wav(files[label], seconds)
        trees = [("this tree", str(ROOT))] + ([(f"{args.compare_tree}", str(args.compare_tree))] if args.compare_tree else [])
        for tree, path in trees:
            for label, f in files.items():
                cli = [sys.executable, "-m", "malsori.cli", "transcribe", str(model), str(f), "--device", "cpu"]
                r = measure(cli, path)
                rows.append(("`malsori transcribe`", tree, f"{label} file (44.1 kHz stereo WAV, {f.stat().st_size / 2**20:.0f} MiB)", r))
                print(rows[-1], flush=True)
        me = [sys.executable, str(Path(__file__).resolve()), "--child", str(model)]
        sources = [(f"{k} file (44.1 kHz stereo WAV)", f"file:{f}") for k, f in files.items()]
        sources.append((f"{args.gen_hours:g} h generated on the fly (44.1 kHz stereo, resampled in the stream)", f"gen:{3600 * args.gen_hours}"))
        for label, src in sources:
            r = measure(me + [src], str(ROOT))
            rows.append(("`Recognizer.transcribe_each`", "this tree", label, r))
            print(rows[-1], flush=True)

    load = os.getloadavg()
    table = ["| entry point | code | audio | peak RSS (MiB) | wall time (s) |", "|---|---|---|---:|---:|"]
    for entry, tree, label, r in rows:
        table.append(f"| {entry} | {tree} | {label} | {r['peak_rss_mib']:.0f} | {r['wall_s']:.0f} |")
    body = (
        "Peak resident memory of transcribing long audio, each case in a fresh process (kernel max RSS via wait4). "
        "Model: a randomly initialized streaming Conformer-CTC (d_model 64, 2 layers), made by the script; the "
        "decoded text is noise and does not matter here. Files are read and resampled in 10 s blocks "
        "(`malsori.audio.iter_audio`, soxr streaming), cut into segments of at most 30 s at quiet points and decoded "
        "16 segments at a time; the process freezes glibc's mmap threshold (`malsori.pretrained.bound_heap`, "
        "as the commands do), without which the heap fragments and peak RSS creeps up ~40 MiB an hour. The generated source is a Python generator of 44.1 kHz stereo blocks mixed down and "
        "fed through the same resampler, cutter and decoding; it never exists whole. One torch thread; "
        f"load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} (the machine was shared with a training "
        "run, so wall times are not speed figures).\n\n" + "\n".join(table)
    )
    if args.no_record:
        print(body)
    else:
        from benchmarks._record import record

        record("memory", body)


if __name__ == "__main__":
    main()
