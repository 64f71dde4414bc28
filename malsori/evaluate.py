"""Scoring a model on a manifest: WER/CER after the shared normalizer, and a per-utterance report, worst first."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malsori.audio import SAMPLE_RATE
from malsori.data.dataset import load_utterance_audio
from malsori.data.manifest import Utterance, atomic_write_text, read_manifest
from malsori.decode.options import DecodeOptions
from malsori.errors import AudioError
from malsori.metrics import ErrorRates, error_rates, utterance_errors
from malsori.pretrained import Recognizer
from malsori.text import normalize


@dataclass
class EvalResult:
    """What an evaluation measured."""

    rates: ErrorRates  # corpus WER/CER
    report: Path  # per-utterance TSV
    skipped: int  # unreadable audio or malformed lines
    audio_seconds: float  # audio decoded
    decode_seconds: float  # wall time spent decoding (features + model + search)

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(1e-9, self.audio_seconds)

    def summary(self) -> str:
        s = f"{self.rates.line()}  RTF {self.rtf:.4f}  report: {self.report}"
        return s + (f"  ({self.skipped} skipped)" if self.skipped else "")


def evaluate_manifest(model: Path | Recognizer, manifest: Path, options: DecodeOptions | None = None, batch_size: int = 16,
                      device: str = "auto", report: Path | None = None, limit: int = 0, strict: bool = False,
                      progress: bool = True) -> EvalResult:
    """Decode MANIFEST with `options` (default greedy) and score it; the report goes to `report` or next to the model."""
    options = options or DecodeOptions()
    rec = model if isinstance(model, Recognizer) else Recognizer.load(model, device)
    man = read_manifest(manifest, strict=strict)
    utts = man.utterances[:limit] if limit else man.utterances
    skipped = len(man.skipped)
    rows, refs, hyps = [], [], []
    audio_s = decode_s = 0.0
    bar = tqdm(total=len(utts), desc=f"decoding {Path(manifest).name}", disable=not progress, dynamic_ncols=True)
    for b in range(0, len(utts), batch_size):
        batch, waves = [], []
        for u in utts[b : b + batch_size]:
            try:
                waves.append(load_utterance_audio(u))
                batch.append(u)
            except AudioError:
                if strict:
                    raise
                skipped += 1
        t0 = time.time()
        out = rec.transcribe_waves(waves, options, batch_size) if waves else []
        decode_s += time.time() - t0
        audio_s += sum(len(w) for w in waves) / 16000
        for u, t in zip(batch, out):
            ref = normalize(u.text)
            we, nw, ce, nc = utterance_errors(ref, t.text)
            rows.append((u.id, we, nw, we / max(1, nw), ce / max(1, nc), ref, t.text))
            refs.append(ref)
            hyps.append(t.text)
        bar.update(len(utts[b : b + batch_size]))
    bar.close()
    rows.sort(key=lambda r: (-r[3], -r[1], r[0]))
    base = Path(".") if isinstance(model, Recognizer) else Path(model).resolve().parent
    report = Path(report) if report else base / f"eval_{Path(manifest).stem}_{options.method}.tsv"
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["id", "word_errors", "ref_words", "wer", "cer", "reference", "hypothesis"])
    w.writerows([(r[0], r[1], r[2], f"{r[3]:.3f}", f"{r[4]:.3f}", r[5], r[6]) for r in rows])
    atomic_write_text(report, buf.getvalue())
    return EvalResult(error_rates(refs, hyps), report, skipped, audio_s, decode_s)


@dataclass
class SetScore:
    """A preloaded set decoded and scored."""

    rates: ErrorRates  # corpus WER/CER against the normalized references
    hyps: list[str]  # hypotheses, in set order
    audio_seconds: float  # audio decoded
    decode_seconds: float  # wall time of features + model + search

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(1e-9, self.audio_seconds)


def score_waves(rec: Recognizer, utts: list[Utterance], waves: list[np.ndarray], options: DecodeOptions | None = None,
                batch_size: int = 16, max_segment_seconds: float = 30.0) -> SetScore:
    """Decode the preloaded `waves` of `utts` (e.g. from `malsori.data.select.load_waves`) and score them; a large
    `max_segment_seconds` lets the model see each long input whole."""
    t0 = time.perf_counter()
    out = rec.transcribe_waves(waves, options or DecodeOptions(), batch_size, max_segment_seconds=max_segment_seconds)
    seconds = time.perf_counter() - t0
    hyps = [t.text for t in out]
    return SetScore(error_rates([normalize(u.text) for u in utts], hyps), hyps, sum(len(w) for w in waves) / SAMPLE_RATE, seconds)
