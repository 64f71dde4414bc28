"""Scoring a model on a manifest: WER/CER after the shared normalizer, and a per-utterance report, worst first."""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malsori.audio import SAMPLE_RATE
from malsori.data.manifest import Utterance, atomic_write_text, read_manifest
from malsori.decode.options import DecodeOptions
from malsori.errors import AudioError, MalsoriError
from malsori.files import create_temp_file
from malsori.metrics import ErrorRates, error_rates, utterance_errors
from malsori.pretrained import Recognizer, Transcript
from malsori.text import normalize


@dataclass
class EvalResult:
    """What an evaluation measured."""

    rates: ErrorRates  # corpus WER/CER
    report: Path  # per-utterance TSV
    skipped: int  # unreadable audio or malformed lines
    audio_seconds: float  # audio decoded
    decode_seconds: float  # wall time spent reading and decoding (features + model + search)

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(1e-9, self.audio_seconds)

    def summary(self) -> str:
        s = f"{self.rates.line()}  RTF {self.rtf:.4f}  report: {self.report}"
        return s + (f"  ({self.skipped} skipped)" if self.skipped else "")


def check_writable(path: Path, what: str) -> None:
    """Fail now, before any work, if `path` cannot be written (its folder cannot be made, is not a folder, or refuses
    a new file)."""
    if path.is_dir():
        raise MalsoriError(f"{path}: {what} path is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = create_temp_file(path.parent, f".{path.name}.probe.")
        os.close(fd)
        probe.unlink()
    except OSError as e:
        raise MalsoriError(f"{path}: cannot write the {what} there ({e.strerror or e}: {e.filename or path.parent})") from None


def evaluate_manifest(model: Path | Recognizer, manifest: Path, options: DecodeOptions | None = None, batch_size: int = 16,
                      device: str = "auto", report: Path | None = None, limit: int = 0, strict: bool = False,
                      progress: bool = True) -> EvalResult:
    """Decode MANIFEST with `options` (default greedy) and score it; the report goes to `report` or next to the model.
    Unreadable audio and malformed lines are counted skips (errors with `strict`); no usable utterance is an error."""
    if limit < 0:
        raise MalsoriError(f"--limit must be 0 (all utterances) or more, got {limit}")
    options = options or DecodeOptions()
    base = Path(".") if isinstance(model, Recognizer) else Path(model).resolve().parent
    report = Path(report) if report else base / f"eval_{Path(manifest).stem}_{options.method}.tsv"
    check_writable(report, "report")
    man = read_manifest(manifest, strict=strict)
    rec = model if isinstance(model, Recognizer) else Recognizer.load(model, device)
    utts = man.utterances[:limit] if limit else man.utterances
    skipped, first_skip = len(man.skipped), (f"line {man.skipped[0][0]}: {man.skipped[0][1]}" if man.skipped else "")
    rows, refs, hyps = [], [], []
    audio_s, t0 = 0.0, time.time()
    with tqdm(total=len(utts), desc=f"decoding {Path(manifest).name}", disable=not progress, dynamic_ncols=True) as bar:
        for u, t in zip(utts, rec.transcribe_each(utts, options, batch_size)):
            bar.update(1)
            if isinstance(t, AudioError):
                if strict:
                    raise AudioError(f"{manifest}: utterance {u.id}: {t}")
                skipped, first_skip = skipped + 1, first_skip or f"{u.id}: {t}"
                continue
            assert isinstance(t, Transcript)
            audio_s += t.duration
            ref = normalize(u.text)
            we, nw, ce, nc = utterance_errors(ref, t.text)
            rows.append((u.id, we, nw, we / max(1, nw), ce / max(1, nc), ref, t.text))
            refs.append(ref)
            hyps.append(t.text)
    if not rows:
        raise MalsoriError(f"{manifest}: no usable utterances to score ({skipped} skipped"
                           + (f"; first: {first_skip})" if first_skip else ")"))
    rows.sort(key=lambda r: (-r[3], -r[1], r[0]))
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["id", "word_errors", "ref_words", "wer", "cer", "reference", "hypothesis"])
    w.writerows([(r[0], r[1], r[2], f"{r[3]:.3f}", f"{r[4]:.3f}", r[5], r[6]) for r in rows])
    atomic_write_text(report, buf.getvalue())
    return EvalResult(error_rates(refs, hyps), report, skipped, audio_s, time.time() - t0)


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
