"""Speed and accuracy of one exported model side by side, in one run: malsori (PyTorch), onnxruntime fp32 and int8,
sherpa-onnx fp32 and int8, on the same utterances, one utterance at a time (batch 1), at each thread count.

The model is exported (`malsori.export.export_onnx`, with --int8) into a temporary folder first. Greedy search
everywhere. malsori: features + model + search (Recognizer.transcribe); onnxruntime: malsori's features (torch, same
threads) + the graph + greedy CTC in Python; sherpa-onnx: its own kaldi fbank (with its forced dither for WeNet
CTC) + graph + greedy, all in C++. RTF = wall time over the set / audio seconds, audio already loaded at 16 kHz,
after one warm-up utterance; the systems take turns utterance by utterance. References and hypotheses go through `malsori.text.normalize`.
Sets: a synthesized held-out test manifest (--synth-test) and speechocean762 from ../shared/data (bench_asr's loaders).
Run: nice -n 19 python benchmarks/bench_export.py --model en-small --synth-test kokoro=PATH --limit 100 [--threads 1 2]
Writes section `export` of docs/export.md (or prints only, --no-record).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _record  # noqa: E402
from bench_asr import DATA_ROOT, REAL_SETS, EvalSet, load_set  # noqa: E402

from malsori.export import export_onnx  # noqa: E402
from malsori.export.runtime import OnnxCTC, read_export, sherpa_recognizer, sherpa_tokens  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.text import normalize  # noqa: E402

DOC = Path(__file__).resolve().parent.parent / "docs" / "export.md"


def systems(rec: Recognizer, folder: Path, threads: int) -> dict:
    """name → (function wave → text) for every runtime of the exported offline CTC model."""
    torch.set_num_threads(threads)
    text = rec.tokenizer.decode
    out = {"malsori (PyTorch)": lambda w: rec.transcribe(w).text}
    for int8 in (False, True):
        tag = "int8" if int8 else "fp32"
        onnx = OnnxCTC(folder, rec.fbank.cfg, "model", threads, int8)
        sherpa = sherpa_recognizer(folder, "model", threads, int8)
        ids = {rec.tokenizer.id_to_piece(i): i for i in range(rec.tokenizer.vocab_size)}
        out[f"onnxruntime {tag}"] = lambda w, o=onnx: text(o.decode(w).tokens)
        out[f"sherpa-onnx {tag}"] = lambda w, s=sherpa: text([ids[t] for t in sherpa_tokens(s, w)])
    return out


def run(fns: dict, s: EvalSet) -> dict[str, tuple[float, list[str]]]:
    """name → (RTF, normalized hypotheses) of every system over a set, one utterance at a time, after a warm-up.
    The systems take turns on each utterance, so a change in the machine's load falls on all of them alike."""
    seconds, hyps = dict.fromkeys(fns, 0.0), {name: [] for name in fns}
    for fn in fns.values():
        fn(s.waves[0])
    for w in s.waves:
        for name, fn in fns.items():
            start = time.perf_counter()
            hyps[name].append(normalize(fn(w)))
            seconds[name] += time.perf_counter() - start
    return {name: (seconds[name] / s.seconds, hyps[name]) for name in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="en-small", help="model folder or released name (a CTC model)")
    parser.add_argument("--synth-test", action="append", default=[], help="NAME=MANIFEST of a synthesized test set; repeatable")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="shared real-speech data folder")
    parser.add_argument("--limit", type=int, default=100, help="evenly spaced utterances per set")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to time")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/export.md alone")
    args = parser.parse_args()

    sets = [load_set(name, Path(path), args.limit) for name, path in (spec.split("=", 1) for spec in args.synth_test)]
    real = args.data_root / REAL_SETS["speechocean762"][0] / "manifest.jsonl"
    if real.is_file():
        sets.append(load_set("speechocean762", real, args.limit))
    rec = Recognizer.load(args.model, device="cpu")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "onnx"
        start = time.perf_counter()
        info = export_onnx(args.model, folder, int8=True)
        export_s = time.perf_counter() - start
        sizes = {k: (folder / read_export(folder)[k]["model"]).stat().st_size / 2**20 for k in ("graphs", "int8")}
        rows = []
        for threads in args.threads:
            fns = systems(rec, folder, threads)
            for s in sets:
                for name, (rtf, hyps) in run(fns, s).items():
                    rates = error_rates(s.refs, hyps)
                    rows.append((name, threads, s.name, rtf, rates))
                    print(f"{name:20s} {threads} threads  {s.name:15s} RTF {rtf:.4f}  {rates.line()}", flush=True)
    load_after = os.getloadavg()
    body = [
        f"Model `{args.model}` ({info.kind}, exported in {export_s:.0f} s): `model.onnx` {sizes['graphs']:.1f} MiB, "
        f"`model.int8.onnx` {sizes['int8']:.1f} MiB. Greedy search, batch 1, audio in memory; RTF = wall time / audio "
        "duration (lower is faster). The machine is shared: other sessions' training runs and tests ran at the same time on "
        f"its {os.cpu_count()} cores (load average over 1, 5, 15 min: {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after), and this ran at nice 19: compare rows with each other, "
        "not with other runs.",
        "",
        "Sets: " + "; ".join(f"{s.name}: {s.source}, {s.seconds / 60:.1f} min" for s in sets),
        "",
        "| system | threads | " + " | ".join(f"{s.name} RTF | {s.name} WER | {s.name} CER" for s in sets) + " |",
        "|---|---|" + "---|---|---|" * len(sets),
    ]
    for name in dict.fromkeys(r[0] for r in rows):
        for threads in args.threads:
            cells = [r for r in rows if r[0] == name and r[1] == threads]
            body.append(f"| {name} | {threads} | " + " | ".join(
                f"{r[3]:.4f} | {100 * r[4].wer:.1f}% | {100 * r[4].cer:.1f}%" for r in cells) + " |")
    if args.no_record:
        print("\n".join(body))
    else:
        _record.record("export", "\n".join(body), DOC)


if __name__ == "__main__":
    main()
