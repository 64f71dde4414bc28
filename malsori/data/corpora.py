"""Importers: turn LibriSpeech, Common Voice, Kaldi data directories and other manifests into our one manifest.

Durations come from file headers (no decoding). A bad item (missing, empty or corrupt audio, a malformed line,
a transcript without audio) is skipped with a reason; `strict=True` raises on the first one instead.
Audio paths are written relative to the output manifest's folder (or absolute), so the manifest works where it lies.

Kaldi `segments` give utterances that are slices of a recording: their `duration` is the slice length and the
extra field `offset` (seconds, absent means 0) is where the slice starts. Datasets must read `duration` seconds
from `offset`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from malsori.audio import audio_duration
from malsori.data.manifest import Utterance, read_manifest, write_manifest
from malsori.errors import AudioError, MalsoriError

FORMATS = ("librispeech", "commonvoice", "kaldi", "jsonl")
_OPTIONS = {"commonvoice": {"split"}, "kaldi": {"audio_root"}}  # importer-specific options
_TOLERANCE = 0.01  # seconds a segment may run past the end of its recording (rounding in Kaldi files)


@dataclass
class ImportReport:
    """What an import wrote and what it skipped."""

    out: Path  # the manifest written
    utterances: list[Utterance]  # the utterances written, in order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item: file, file:line or id, reason)

    def summary(self) -> str:
        hours = sum(u.duration for u in self.utterances) / 3600
        s = f"{self.out}: {len(self.utterances)} utterances, {hours:.3f} h"
        if self.skipped:
            item, reason = self.skipped[0]
            s += f"; {len(self.skipped)} skipped (first: {item}: {reason})"
        return s


class _Collector:
    """Checks each item's audio and gathers utterances with paths rewritten for the output folder."""

    def __init__(self, out: Path, strict: bool, absolute_paths: bool):
        self.out_dir = out.parent.resolve()
        self.strict, self.absolute = strict, absolute_paths
        self.utts: list[Utterance] = []
        self.skipped: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self._durations: dict[Path, float] = {}

    def skip(self, item: str, reason: str) -> None:
        if self.strict:
            raise MalsoriError(f"{item}: {reason}")
        self.skipped.append((item, reason))

    def file_duration(self, path: Path) -> float | None:
        """The recording's duration from its header, or None (and a skip) if it is missing, empty or corrupt."""
        if path in self._durations:
            return self._durations[path]
        if not path.is_file():
            reason = "audio file not found"
        elif path.stat().st_size == 0:
            reason = "empty audio file (0 bytes)"
        else:
            try:
                d = audio_duration(path)
                reason = "audio has zero samples" if d <= 0 else ""
            except AudioError as e:
                reason = str(e).split(": ", 1)[-1]
        if reason:
            self.skip(str(path), reason)
            return None
        self._durations[path] = d
        return d

    def add(self, uid: str, audio: Path, text: str, speaker: str = "", extra: dict | None = None,
            offset: float = 0.0, duration: float | None = None, item: str = "") -> None:
        """Add one utterance; `offset`/`duration` select a slice of the recording (Kaldi segments, manifests)."""
        if uid in self.ids:
            return self.skip(item or uid, f"duplicate utterance id {uid!r}")
        total = self.file_duration(audio)
        if total is None:
            return
        extra = dict(extra or {})
        if offset:
            extra["offset"] = round(offset, 4)
        if duration is None or duration <= 0:
            duration = total - offset
        if offset < 0 or duration <= 0 or offset + duration > total + _TOLERANCE:
            return self.skip(item or uid, f"slice {offset:.3f}+{duration:.3f} s is outside {audio} ({total:.3f} s)")
        self.ids.add(uid)
        folder = audio.parent.resolve()
        path = folder / audio.name if self.absolute else Path(os.path.relpath(folder, self.out_dir)) / audio.name
        self.utts.append(Utterance(uid, path.as_posix(), text, speaker, round(duration, 4), extra, self.out_dir))


def _lines(path: Path) -> list[str]:
    """A text file's lines, split at newlines only (not at Unicode separators inside a transcript)."""
    try:
        return [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    except UnicodeDecodeError as e:
        raise MalsoriError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _librispeech(src: Path, c: _Collector) -> None:
    """`<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` with lines `<utt-id> <TEXT>` beside `<utt-id>.flac`."""
    trans = sorted(src.rglob("*.trans.txt"))
    if not trans:
        raise MalsoriError(f"{src}: no *.trans.txt files found (is this a LibriSpeech folder?)")
    for t in trans:
        for n, line in enumerate(_lines(t), 1):
            uid, text = (line.split(maxsplit=1) + ["", ""])[:2]
            if not uid:
                continue
            if not text.strip():
                c.skip(f"{t}:{n}", "malformed line (expected '<utt-id> <TEXT>')")
                continue
            speaker, _, rest = uid.partition("-")
            c.add(uid, t.parent / f"{uid}.flac", text.strip(), speaker, {"chapter": rest.partition("-")[0]},
                  item=f"{t}:{n}")


def _commonvoice(src: Path, c: _Collector, split: str = "train") -> None:
    """`<split>.tsv` (tab-separated, header, no quoting: client_id, path, sentence, …) and `clips/<path>`."""
    tsv = src / (split if split.endswith(".tsv") else f"{split}.tsv")
    if not tsv.is_file():
        raise MalsoriError(f"{tsv}: Common Voice split not found")
    rows = csv.reader(_lines(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, [])
    missing = [k for k in ("client_id", "path", "sentence") if k not in header]
    if missing:
        raise MalsoriError(f"{tsv}:1: header lacks column(s) {', '.join(missing)}")
    keep = [k for k in ("age", "gender", "accents", "locale") if k in header]
    for n, row in enumerate(rows, 2):
        if not row:
            continue
        if len(row) != len(header):
            c.skip(f"{tsv}:{n}", f"expected {len(header)} tab-separated fields, got {len(row)}")
            continue
        r = dict(zip(header, row))
        if not r["path"] or not r["sentence"].strip():
            c.skip(f"{tsv}:{n}", "empty path or sentence")
            continue
        extra = {k: r[k] for k in keep if r[k]}
        c.add(Path(r["path"]).stem, src / "clips" / r["path"], r["sentence"].strip(), r["client_id"], extra,
              item=f"{tsv}:{n}")


def _kaldi_table(path: Path, c: _Collector, required: bool = True) -> dict[str, str]:
    """A Kaldi text table: `<key> <value…>` a line (the value may be empty or hold spaces)."""
    if not path.is_file():
        if required:
            raise MalsoriError(f"{path}: not found (a Kaldi data directory needs wav.scp and text)")
        return {}
    table: dict[str, str] = {}
    for n, line in enumerate(_lines(path), 1):
        key, value = (line.split(maxsplit=1) + ["", ""])[:2]
        if key in table:
            c.skip(f"{path}:{n}", f"duplicate key {key!r}")
        elif key:
            table[key] = value.strip()
    return table


def _kaldi(src: Path, c: _Collector, audio_root: Path | None = None) -> None:
    """`wav.scp`, `text`, optional `segments` (`<utt> <rec> <start> <end>`) and `utt2spk`."""
    root = Path(audio_root or src)
    wavs = _kaldi_table(src / "wav.scp", c)
    texts = _kaldi_table(src / "text", c)
    spk = _kaldi_table(src / "utt2spk", c, required=False)
    segs = _kaldi_table(src / "segments", c, required=False)
    listing = src / "segments" if (src / "segments").is_file() else src / "wav.scp"
    if listing.name == "segments":
        items = {}
        for utt, value in segs.items():
            f = value.split()
            try:
                items[utt] = (f[0], float(f[1]), float(f[2]))
            except (IndexError, ValueError):
                texts.pop(utt, None)  # counted once, here
                c.skip(str(src / "segments"), f"{utt}: malformed line (expected '<utt> <rec> <start> <end>')")
    else:
        items = {rec: (rec, 0.0, -1.0) for rec in wavs}
    for utt, (rec, start, end) in items.items():
        if utt not in texts:
            c.skip(str(src / "text"), f"no transcript for utterance {utt!r}")
        elif rec not in wavs:
            c.skip(str(src / "wav.scp"), f"no recording {rec!r} (needed by utterance {utt!r})")
        elif wavs[rec].endswith("|"):
            c.skip(str(src / "wav.scp"), f"{rec}: is a shell pipe; malsori reads audio files only (convert it first)")
        else:
            dur = None if end < 0 else end - start
            c.add(utt, root / wavs[rec], texts[utt], spk.get(utt, ""), offset=start, duration=dur,
                  item=f"{listing}: utterance {utt}")
    for utt in sorted(texts.keys() - items.keys()):
        c.skip(str(src / "text"), f"utterance {utt!r} has no audio (not in wav.scp/segments)")


def _jsonl(src: Path, c: _Collector) -> None:
    """Another manifest: every line is re-checked, its audio path re-based on the output folder."""
    src = src / "manifest.jsonl" if src.is_dir() else src
    m = read_manifest(src, strict=c.strict)
    for line, reason in m.skipped:
        c.skip(f"{src}:{line}", reason)
    for u in m.utterances:
        extra = dict(u.extra)
        offset = float(extra.pop("offset", 0.0) or 0.0)
        c.add(u.id, u.audio_path, u.text, u.speaker, extra, offset=offset, duration=u.duration, item=f"{src}:{u.id}")


def detect_format(src: Path) -> str:
    """Guess the layout of `src` (one of FORMATS) from the files it holds."""
    src = Path(src)
    if src.is_file() and src.suffix in (".jsonl", ".json"):
        return "jsonl"
    if (src / "wav.scp").is_file():
        return "kaldi"
    if (src / "manifest.jsonl").is_file():
        return "jsonl"
    if (src / "clips").is_dir() and any(src.glob("*.tsv")):
        return "commonvoice"
    if next(src.rglob("*.trans.txt"), None) is not None:
        return "librispeech"
    raise MalsoriError(f"{src}: cannot tell the corpus format; name it ({', '.join(FORMATS)})")


def import_corpus(fmt: str, src: Path, out: Path, strict: bool = False, absolute_paths: bool = False,
                  **opts) -> ImportReport:
    """Import `src` in layout `fmt` ("auto" guesses) and write the manifest `out` (a folder gets manifest.jsonl).

    Options: `split` (Common Voice tsv name, default "train"), `audio_root` (Kaldi: folder that relative
    wav.scp paths start from, default the data directory).
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise MalsoriError(f"{src}: not found")
    fmt = detect_format(src) if fmt == "auto" else fmt
    readers = {"librispeech": _librispeech, "commonvoice": _commonvoice, "kaldi": _kaldi, "jsonl": _jsonl}
    if fmt not in readers:
        raise MalsoriError(f"unknown corpus format {fmt!r} (use one of {', '.join(FORMATS)} or auto)")
    if out.is_dir() or not out.suffix:
        out = out / "manifest.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    c = _Collector(out, strict, absolute_paths)
    opts = {k: v for k, v in opts.items() if v is not None}
    wrong = sorted(set(opts) - _OPTIONS.get(fmt, set()))
    if wrong:
        raise MalsoriError(f"option(s) {', '.join(wrong)} do not apply to {fmt} corpora")
    readers[fmt](src, c, **opts)
    if not c.utts:
        first = f" (first skip: {c.skipped[0][0]}: {c.skipped[0][1]})" if c.skipped else ""
        raise MalsoriError(f"{src}: no utterances imported{first}")
    write_manifest(out, c.utts)
    return ImportReport(out, c.utts, c.skipped)
