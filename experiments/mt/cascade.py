"""Speech translation by cascade, measured: the English sources of the eng→fra test split spoken by eSpeak NG (one
fixed voice), recognized and translated by `malsori translate MODEL --asr ASR_MODEL *.wav --json`, and scored against
the same references as the text input — also with the text input normalized the way the recognizer writes (lower
case, no punctuation), so the cost of the recognizer's errors and of its written form are seen apart.

    python -m experiments.mt.cascade ../exp-mt/transformer_30min/model --asr models/en-small --out ../exp-mt/cascade
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from experiments.mt.measure import SPLITS, test_set
from malsori.audio import save_audio
from malsori.data.tts.espeak import SynthParams, Synthesizer, Voice
from malsori.decode.options import DecodeOptions
from malsori.files import strict_json
from malsori.metrics import error_rates
from malsori.mt.score import score
from malsori.mt.translate import TextTranslator
from malsori.text import normalize


def speak(sources: list[str], out: Path, voice: Voice, params: SynthParams) -> list[Path]:
    """One 16 kHz WAV per source (kept when already there: a rerun only recognizes)."""
    out.mkdir(parents=True, exist_ok=True)
    synth, paths = Synthesizer(), []
    for k, text in enumerate(sources):
        path = out / f"test{k:04d}.wav"
        if not path.is_file():
            save_audio(path, synth.synthesize(text, voice, params))
        paths.append(path)
    return paths


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="eng→fra translator folder")
    ap.add_argument("--asr", type=Path, required=True, help="English recognizer folder (or released name)")
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--voice", default="en-us", help="eSpeak NG voice: accent[+variant]")
    ap.add_argument("--rate", type=int, default=175, help="words per minute")
    ap.add_argument("--beam", type=int, default=5, help="translation beam (the recognizer uses the CLI's beam 8)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N test sources (a quick check)")
    args = ap.parse_args()
    test, _ = test_set(args.shared / "text/parallel/eng-fra.txt.gz", SPLITS / "split_eng_fra.tsv")
    test = test[: args.limit or None]
    sources, refs = [m.source for m in test], [m.references for m in test]
    voice, params = Voice(*args.voice.split("+", 1)), SynthParams(rate=args.rate)
    c0 = time.process_time()
    wavs = speak(sources, args.out / "audio", voice, params)
    synth_cpu = time.process_time() - c0
    c0, t0 = child_cpu(), time.time()
    cmd = [sys.executable, "-m", "malsori.cli", "translate", str(args.model), "--asr", str(args.asr), "--json",
           "--method", "beam", "--beam", str(args.beam), "--device", "cpu", *map(str, wavs)]
    lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    cascade_cpu, cascade_wall = child_cpu() - c0, time.time() - t0
    by_id = {(o := json.loads(line))["id"]: o for line in lines if line.strip()}
    outs = [by_id[str(p)] for p in wavs]
    transcripts, speech_hyps = [o["text"] for o in outs], [o["translation"] for o in outs]
    tr = TextTranslator.load(args.model, "cpu")
    options = DecodeOptions(method="beam", beam_size=args.beam)
    text_hyps = [t.text for t in tr.translate(sources, options)]
    plain_hyps = [t.text for t in tr.translate([normalize(s) for s in sources], options)]
    asr = error_rates([normalize(s) for s in sources], [normalize(t) for t in transcripts])
    result = {"model": str(args.model), "asr": str(args.asr), "sentences": len(test), "voice": voice.name,
              "synth": {"rate": params.rate, "pitch": params.pitch, "engine": "espeak-ng"},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(cmd[:10]) + " ...",
              "asr_wer": asr.wer, "asr_cer": asr.cer, "asr_line": asr.line(),
              "synth_cpu_seconds": synth_cpu, "cascade_cpu_seconds": cascade_cpu, "cascade_wall_seconds": cascade_wall,
              "audio_seconds": sum(o["duration"] for o in outs)}
    for name, hyps in (("text", text_hyps), ("text_normalized", plain_hyps), ("speech", speech_hyps)):
        s = score(hyps, refs)
        result[name] = {"bleu": s.bleu, "chrf": s.chrf, "bleu_signature": s.bleu_signature}
    (args.out / "cascade.json").write_text(strict_json(result, "cascade", indent=1), encoding="utf-8")
    rows = ["source\ttranscript\ttext translation\tspeech translation"] + [
        f"{s}\t{t}\t{a}\t{b}" for s, t, a, b in zip(sources, transcripts, text_hyps, speech_hyps)]
    (args.out / "cascade_test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
