"""Recognition accuracy and speed of a trained malsori model on synthesized and real speech, beside pocketsphinx.

Sets: a synthesized held-out test manifest (--synth-test), and from /work/shared/data an evenly spaced subset of
speechocean762 (non-native read English) and of FSDD (isolated digits). Each set is decoded by the malsori model
(greedy and beam search) and by pocketsphinx 5.x with its bundled US-English acoustic model, dictionary and LM,
on the same utterances, in the same run. References and every hypothesis go through `malsori.text.normalize`.
RTF = decode wall time / audio duration, with the audio already loaded at 16 kHz (features + model + search for
malsori; the whole pocketsphinx decoder for pocketsphinx).
Defaults: all of the synthesized test set, 300 utterances of each real set. Writes section asr_<name> (--name).
Run: python benchmarks/bench_asr.py --model DIR [--synth-test MANIFEST] [--limit-real 300] [--no-pocketsphinx] [--name ctc]
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
from malsori.data.dataset import load_utterance_audio  # noqa: E402
from malsori.data.manifest import Utterance, read_manifest  # noqa: E402
from malsori.decode.options import DecodeOptions  # noqa: E402
from malsori.errors import AudioError, MalsoriError  # noqa: E402
from malsori.metrics import ErrorRates, error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.text import normalize  # noqa: E402

DATA_ROOT = Path("/work/shared/data")
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


def evenly_spaced(items: list, n: int) -> list:
    """n items at evenly spaced positions (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def load_set(name: str, manifest: Path, limit: int) -> EvalSet:
    """Read a manifest, keep an evenly spaced subset of `limit` utterances, load their audio and normalize texts."""
    man = read_manifest(manifest)
    chosen = evenly_spaced(man.utterances, limit)
    how = (f"all {len(chosen)} utterances" if len(chosen) == len(man.utterances)
           else f"{len(chosen)} of {len(man.utterances)} utterances, evenly spaced in file order (every ~{len(man.utterances) / len(chosen):.1f}th)")
    utts, waves, unreadable = [], [], 0
    for u in chosen:
        try:
            waves.append(load_utterance_audio(u))
            utts.append(u)
        except AudioError as e:
            print(f"warning: {e}", file=sys.stderr)
            unreadable += 1
    return EvalSet(name, f"`{manifest}`: {how}", utts, waves, [normalize(u.text) for u in utts], unreadable)


def run_malsori(rec: Recognizer, s: EvalSet, method: str, beam_size: int, batch_size: int, repeats: int) -> Result:
    """Decode the whole set (length-sorted batches inside the Recognizer) `repeats` times; the median time counts."""
    times, out = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = rec.transcribe_waves(s.waves, DecodeOptions(method=method, beam_size=beam_size), batch_size)
        times.append(time.perf_counter() - start)
    hyps = [normalize(t.text) for t in out]
    search = f"beam {beam_size}" if method == "beam" else method
    return Result(s.name, "malsori", search, hyps, error_rates(s.refs, hyps), statistics.median(times), s.seconds)


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


def training_manifest(model_dir: Path) -> Path | None:
    """The training manifest named in the run's train_config.json beside the model folder, if it is readable here."""
    train_cfg = model_dir.parent / "train_config.json"
    if not train_cfg.is_file():
        return None
    path = Path(json.loads(train_cfg.read_text()).get("data", {}).get("train", "") or "/nonexistent")
    return path if path.is_file() else None


def training_data_lines(model_dir: Path) -> list[str]:
    """What the training manifest held (size, whether it is eSpeak NG speech)."""
    path = training_manifest(model_dir)
    if path is None:
        return ["- training data: unknown (no readable training manifest named in a train_config.json beside the model folder)"]
    utts = read_manifest(path).utterances
    hours = sum(u.duration for u in utts) / 3600
    synth = sum("espeak_seed" in u.extra for u in utts)
    kind = "all synthesized with eSpeak NG" if synth == len(utts) else f"{synth} synthesized with eSpeak NG, {len(utts) - synth} other"
    return [f"- training data: `{path}`: {len(utts)} utterances, {hours:.1f} h, {kind}"]


def overlap_with_training(model_dir: Path, s: EvalSet) -> str:
    """How many of a set's voices and normalized sentences the training manifest also holds (the held-out check)."""
    path = training_manifest(model_dir)
    if path is None:
        return ""
    train = read_manifest(path).utterances
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="trained model folder (config.json, model.safetensors, ...)")
    parser.add_argument("--synth-test", type=Path, help="synthesized held-out test manifest (skipped when not given)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="shared real-speech data folder")
    parser.add_argument("--limit-real", type=int, default=300, help="evenly spaced utterances per real set (0 = all)")
    parser.add_argument("--limit-synth", type=int, default=0, help="evenly spaced synthesized test utterances (0 = all)")
    parser.add_argument("--methods", default="greedy,beam", help="malsori search methods, comma-separated")
    parser.add_argument("--beam-size", type=int, default=8, help="beam size of the beam method")
    parser.add_argument("--batch-size", type=int, default=16, help="malsori decoding batch size (length-sorted)")
    parser.add_argument("--repeats", type=int, default=3, help="timed malsori passes per set and method (median counts)")
    parser.add_argument("--pocketsphinx", action=argparse.BooleanOptionalAction, default=True, help="run the pocketsphinx baseline")
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
    if args.synth_test:
        if not args.synth_test.is_file():
            sys.exit(f"error: {args.synth_test}: synthesized test manifest not found")
        sets["synth-test"] = load_set("synth-test", args.synth_test, args.limit_synth)
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
    results: list[Result] = []
    for s in sets.values():
        for method in methods:
            results.append(run_malsori(rec, s, method, args.beam_size, args.batch_size, args.repeats))
            r = results[-1]
            print(f"{s.name:15s} malsori {r.search:8s} {r.rates.line()}  RTF {r.rtf:.3f}", flush=True)
        if decoder is not None:
            results.append(run_pocketsphinx(decoder, s))
            r = results[-1]
            print(f"{s.name:15s} pocketsphinx     {r.rates.line()}  RTF {r.rtf:.3f}  "
                  f"median {1e3 * statistics.median(r.per_utt_seconds):.0f} ms/utt", flush=True)
    load_after = os.getloadavg()[0]
    if args.hyps:
        write_hyps(args.hyps, results, sets)
        print(f"hypotheses: {args.hyps}")

    from importlib.metadata import version

    lines = [
        "Word and character error rates of a trained malsori model beside the pocketsphinx baseline, on the same "
        "utterances in one run. References and all hypotheses are scored after the same normalizer "
        "(`malsori.text.normalize`: lower-case, numbers as words, no punctuation). RTF = decode wall time / audio "
        f"duration with the audio already loaded at 16 kHz; malsori: features + model + search in length-sorted batches "
        f"of {args.batch_size}, {args.threads} torch threads, CPU, median of {args.repeats} passes over the set after a "
        "warm-up; pocketsphinx: one pass, one utterance at a time (int16 conversion + decoder), one thread.",
        "",
        *model_summary(args.model, rec),
        f"- baseline: pocketsphinx {version('pocketsphinx')} with its default configuration: the bundled en-us "
        "acoustic model, CMU dictionary (cmudict-en-us) and en-us trigram LM; a general-purpose recognizer that was "
        "trained on real (native, US) speech, with no tuning to these sets",
        "- sets:",
    ]
    for s in sets.values():
        desc = "synthesized held-out test set (eSpeak NG)" if s.name == "synth-test" else REAL_SETS[s.name][1]
        extra = overlap_with_training(args.model, s) if s.name == "synth-test" else ""
        lines.append(f"  - {s.name}: {desc}; {s.source}{extra}" + (f"; {s.unreadable} unreadable skipped" if s.unreadable else ""))
    for m in missing:
        lines.append(f"  - {m}: skipped")
    lines += ["", *table(results, sets), ""]
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
    else:
        record(args.name if args.name.startswith("asr") else f"asr_{args.name}", body)


if __name__ == "__main__":
    main()
