"""Offline speech corpus synthesis with eSpeak NG (through its C API, from the espeakng-loader wheel).

Every utterance is planned up front from the config and its seed: sentence, voice (accent + variant) and
synthesis parameters. Dev and test get voices (accent+variant combinations) and sentences that train never
has. Workers only carry out the plan, so the corpus is the same whatever the number of workers, and a rerun
skips finished files. eSpeak keeps hidden state between utterances (pitch flutter phase, cycle counters), so
each utterance runs in a freshly loaded copy of the library: output depends only on its own plan entry.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from malsori.audio import audio_duration, resample, save_audio
from malsori.config import from_dict, to_dict
from malsori.data.augment import AugmentConfig, Augmenter
from malsori.data.manifest import Utterance, atomic_write_text, write_manifest
from malsori.data.sentences import generate_sentences, read_text_sentences
from malsori.errors import ConfigError, MalsoriError
from malsori.text import normalize

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050  # eSpeak NG's own output rate
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice: an English accent (language file) with a voice variant."""

    accent: str  # language id, e.g. "en-us", "en-gb-scotland"
    variant: str = ""  # variant file name in voices/!v, e.g. "f3", "klatt2"; "" = the accent's plain voice

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


@dataclass
class SynthParams:
    """Prosody and level of one utterance."""

    rate: int = 175  # speaking rate, words per minute (eSpeak 80–450)
    pitch: int = 50  # base pitch, 0–100
    pitch_range: int = 50  # pitch variation, 0 (monotone) – 100
    volume: int = 100  # eSpeak amplitude, 0–200 (loud values clip and compress a little inside eSpeak)
    word_gap: int = 0  # extra pause between words, units of 10 ms
    lead_silence: float = 0.1  # seconds of silence before speech, after trimming
    trail_silence: float = 0.1  # seconds of silence after speech
    level_db: float = -20.0  # speech RMS level after normalization, dBFS
    espeak_seed: int = 0  # seed of eSpeak's noise generators (breathy variants)


def espeak_data_path() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def available_accents() -> list[str]:
    """English accents shipped in the eSpeak NG data (lang/gmw/en*), as lower-case voice ids."""
    lang = espeak_data_path() / "lang" / "gmw"
    return sorted(p.name.lower() for p in lang.glob("en*") if p.name.lower() != "en-shaw")  # Shavian: a script


def available_variants() -> list[str]:
    """Voice variant names in voices/!v (only names eSpeak can take after '+': no spaces)."""
    return sorted(p.name for p in (espeak_data_path() / "voices" / "!v").iterdir() if p.is_file() and " " not in p.name)


def default_variants() -> list[str]:
    """Variants used unless listed: all but the unstable test voice "fast", whispering ones (voicing < 25) and
    heavy-echo effect voices (echo amplitude > 100: robots, "Demonic"), which sound like effects, not speakers."""
    keep = []
    for name in available_variants():
        settings = {}
        text = (espeak_data_path() / "voices" / "!v" / name).read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            parts = line.split("//")[0].split()
            if len(parts) >= 2 and all(p.lstrip("-").isdigit() for p in parts[1:]):
                settings[parts[0]] = [int(p) for p in parts[1:]]
        echo_amp = settings.get("echo", [0, 0])[-1]
        if name != "fast" and echo_amp <= 100 and settings.get("voicing", [64])[0] >= 25:
            keep.append(name)
    return keep


class Synthesizer:
    """Text → 16 kHz float32 speech with eSpeak NG, trimmed and level-normalized.

    eSpeak is loaded afresh for each utterance (about a millisecond) so that no state leaks between
    utterances. eSpeak is not thread-safe: use one Synthesizer per process, from one thread.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, data_dir: Path | None = None):
        """`data_dir`: a folder made by `english_data_copy` to share between processes (default: a private one)."""
        import espeakng_loader

        self.sample_rate = sample_rate
        self._lib_path = espeakng_loader.get_library_path()
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="malsori-espeak-")  # removed with this object
            data_dir = english_data_copy(Path(self._tmp.name))
        self._data = Path(data_dir)
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = proto(self._collect)  # keep a reference: eSpeak holds the pointer

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def espeak(self, text: str, voice: Voice, params: SynthParams) -> np.ndarray:
        """Raw eSpeak output: int16 samples at 22050 Hz."""
        variant_ok = not voice.variant or (self._data / "voices" / "!v" / voice.variant).is_file()
        if not (self._data / "lang" / "gmw" / voice.accent).is_file() or not variant_ok:
            raise MalsoriError(f"eSpeak NG has no voice '{voice.name}' (accents: {', '.join(available_accents())}; "
                               f"variants: {', '.join(available_variants())})")
        self._chunks = []
        lib = ctypes.CDLL(self._lib_path, mode=ctypes.RTLD_LOCAL)
        c_int, c_uint, c_void_p, c_char_p = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p, ctypes.c_char_p
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Synth.argtypes = [c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint, c_void_p, c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        try:
            if lib.espeak_Initialize(2, 0, str(self._data).encode(), 0) != ESPEAK_RATE:  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
                raise MalsoriError(f"{self._lib_path}: eSpeak NG failed to initialize with data {self._data}")
            try:
                self._speak(lib, text, voice, params)
            finally:
                lib.espeak_Terminate()
        finally:
            _unload(lib)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def _speak(self, lib: ctypes.CDLL, text: str, voice: Voice, p: SynthParams) -> None:
        """Set voice, seed and parameters on an initialized eSpeak, and synthesize into self._chunks."""
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed(p.espeak_seed)
        _c_srand(p.espeak_seed)  # breath noise uses the C library's rand()
        if lib.espeak_SetVoiceByName(f"gmw/{voice.name}".encode()) != 0:  # a file path: no scan of all voices
            raise MalsoriError(f"eSpeak NG could not load voice '{voice.name}'")
        # espeak_PARAMETER ids: 1 rate, 2 volume, 3 pitch, 4 range, 7 word gap
        for pid, value in ((1, p.rate), (2, p.volume), (3, p.pitch), (4, p.pitch_range), (7, p.word_gap)):
            lib.espeak_SetParameter(pid, int(value), 0)
        data = text.encode("utf-8") + b"\0"
        lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None)  # 1 = POS_CHARACTER; flags 1 = UTF-8

    def synthesize(self, text: str, voice: Voice | str, params: SynthParams | None = None) -> np.ndarray:
        """Speak `text` (spoken as written: normalize it first for exact targets); float32 at `sample_rate`."""
        if isinstance(voice, str):
            voice = Voice(*voice.split("+", 1))
        params = params or SynthParams()
        raw = self.espeak(text, voice, params).astype(np.float32) / 32768.0
        wave = resample(raw, ESPEAK_RATE, self.sample_rate)
        return trim_and_level(wave, self.sample_rate, params)


def english_data_copy(folder: Path) -> Path:
    """Copy eSpeak's English data into `folder`/espeak-ng-data, accent files under lower-case names, so that
    espeak_SetVoiceByName finds "gmw/en-us" as a file instead of reading every voice file (15 ms) at each load."""
    src, dst = espeak_data_path(), Path(folder) / "espeak-ng-data"
    (dst / "lang" / "gmw").mkdir(parents=True)
    (dst / "voices" / "!v").mkdir(parents=True)
    for name in ("phondata", "phonindex", "phontab", "intonations", "en_dict"):
        shutil.copyfile(src / name, dst / name)
    for f in (src / "lang" / "gmw").glob("en*"):
        shutil.copyfile(f, dst / "lang" / "gmw" / f.name.lower())
    for f in (src / "voices" / "!v").iterdir():
        if f.is_file() and " " not in f.name:
            shutil.copyfile(f, dst / "voices" / "!v" / f.name)
    return dst


def _c_srand(seed: int) -> None:
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    except (OSError, AttributeError):  # no process-wide C library handle (Windows): breathy voices may vary slightly
        pass


def _unload(lib: ctypes.CDLL) -> None:
    """Unmap the library so the next load starts from pristine static state."""
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")
    close(lib._handle)


def trim_and_level(wave: np.ndarray, sample_rate: int, p: SynthParams, floor_db: float = -45.0) -> np.ndarray:
    """Cut silence outside the speech (10 ms frames above `floor_db` relative to the loudest), pad the
    requested lead/trail silence, scale speech RMS to `p.level_db` and keep the peak below 0.99."""
    hop = sample_rate // 100
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop).astype(np.float64)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    active = np.flatnonzero(energy > energy.max() + floor_db) if len(frames) else np.zeros(0, int)
    if len(active) == 0 or not np.any(frames[active]):
        return np.zeros(int((p.lead_silence + p.trail_silence) * sample_rate), np.float32)
    speech = wave[max(0, active[0] * hop - hop): (active[-1] + 2) * hop]
    rms = math.sqrt(float(np.mean(frames[active] ** 2)))
    speech = speech * (10 ** (p.level_db / 20) / max(rms, 1e-9))
    peak = float(np.abs(speech).max())
    if peak > 0.99:
        speech *= 0.99 / peak
    lead, trail = np.zeros(int(p.lead_silence * sample_rate)), np.zeros(int(p.trail_silence * sample_rate))
    return np.concatenate([lead, speech, trail]).astype(np.float32)


@dataclass
class SynthConfig:
    """What corpus to synthesize; everything but `workers` and `strict` is saved and must match when resuming."""

    num_train: int = 2000  # train utterances (unused when train_hours > 0)
    num_dev: int = 200  # dev utterances
    num_test: int = 200  # test utterances
    train_hours: float = 0.0  # > 0: about this many hours of train audio instead of num_train
    seed: int = 0  # one seed for sentences, voices, parameters and augmentation
    text_files: list[str] = field(default_factory=list)  # sentence files (.txt / .txt.gz, one a line)
    use_generator: bool | None = None  # add built-in sentences; None = only when no text files are given
    domains: list[str] = field(default_factory=list)  # built-in sentence domains (empty = all)
    max_words: int = 40  # longer sentences are dropped
    accents: list[str] = field(default_factory=list)  # English accents to use (empty = all found)
    variants: list[str] = field(default_factory=list)  # voice variants to use (empty = default_variants())
    dev_voices: int = 12  # accent+variant combinations reserved for dev
    test_voices: int = 12  # accent+variant combinations reserved for test
    rate: tuple[int, int] = (130, 240)  # speaking rate range, words per minute
    pitch: tuple[int, int] = (20, 80)  # base pitch range, 0–100
    pitch_range: tuple[int, int] = (15, 90)  # pitch variation range, 0–100
    volume: tuple[int, int] = (70, 140)  # eSpeak amplitude range
    word_gap: tuple[int, int] = (0, 3)  # extra pause between words, 10 ms units
    silence: tuple[float, float] = (0.05, 0.4)  # lead and trail silence range, seconds (each drawn)
    level_db: tuple[float, float] = (-32.0, -16.0)  # speech RMS level range, dBFS
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augmentation applied at synthesis time
    augment_splits: list[str] = field(default_factory=lambda: ["train"])  # splits that get augmentation
    workers: int = 0  # processes (0 = all CPUs); does not change the output
    strict: bool = False  # a bad line in a text file is an error instead of being skipped

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = from_dict(AugmentConfig, self.augment, "augment")
        for name in ("num_train", "num_dev", "num_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not set(self.augment_splits) <= set(SPLITS):
            raise ConfigError(f"augment_splits: must be among {', '.join(SPLITS)}, got {self.augment_splits}")
        for name in ("rate", "pitch", "pitch_range", "volume", "word_gap", "silence", "level_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"{name}: range low {lo} is above high {hi}")


@dataclass
class Job:
    """One planned utterance."""

    split: str
    id: str
    text: str  # the sentence as written (manifest `text`)
    spoken: str  # what eSpeak reads: the normalized words, so audio and target agree
    source: str  # generator domain, or "file"
    voice: Voice
    params: SynthParams
    augment: dict | None  # augmentation params drawn for it (None: split not augmented)
    augment_seed: int  # seed of the noise samples / impulse response


def _voice_splits(cfg: SynthConfig) -> dict[str, list[Voice]]:
    """Partition accent × variant combinations: dev and test get their own, train the rest."""
    accents = cfg.accents or available_accents()
    variants = cfg.variants or default_variants()
    for name, chosen, known in (("accents", accents, available_accents()),
                                ("variants", variants, available_variants())):
        bad = [x for x in chosen if x not in known]
        if bad:
            raise ConfigError(f"{name}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    combos = [Voice(a, v) for a in sorted(accents) for v in sorted(variants)]
    np.random.default_rng([cfg.seed, 1]).shuffle(combos)
    n_dev = cfg.dev_voices if cfg.num_dev else 0
    n_test = cfg.test_voices if cfg.num_test else 0
    if (cfg.num_dev and n_dev < 1) or (cfg.num_test and n_test < 1) or n_dev + n_test >= len(combos):
        raise ConfigError(f"dev_voices/test_voices: need at least 1 each and fewer than {len(combos)} in all "
                          "(the accent × variant combinations)")
    return {"dev": combos[:n_dev], "test": combos[n_dev: n_dev + n_test], "train": combos[n_dev + n_test:]}


def _estimate_seconds(spoken: str, cfg: SynthConfig) -> float:
    """Rough duration of a sentence at the middle rate (eSpeak speaks about 18.5 characters/s at 175 wpm)."""
    return len(spoken) / (18.5 * sum(cfg.rate) / 2 / 175) + sum(cfg.silence)


def _sentence_splits(cfg: SynthConfig, counts: dict[str, int], notes: dict) -> dict[str, list[tuple[str, str]]]:
    """(source, sentence) lists per split; no normalized sentence is in two splits."""
    pool: list[tuple[str, str]] = []
    skipped: list[str] = []
    if cfg.text_files:
        pool += [("file", s) for s in read_text_sentences(cfg.text_files, strict=cfg.strict, skipped=skipped)]
    total = sum(counts.values())
    if cfg.use_generator or (cfg.use_generator is None and not cfg.text_files):
        pool += generate_sentences(total, cfg.seed, cfg.domains or None)
    unique: dict[str, tuple[str, str]] = {}
    too_long = 0
    for src, s in pool:
        key = normalize(s)
        if len(key.split()) > cfg.max_words:
            too_long += 1
        else:
            unique.setdefault(key, (src, s))
    notes.update(text_lines_skipped=skipped, sentences_too_long=too_long)
    sentences = list(unique.values())
    np.random.default_rng([cfg.seed, 2]).shuffle(sentences)
    n_dev = math.ceil(len(sentences) * counts["dev"] / total) if counts["dev"] else 0
    n_test = math.ceil(len(sentences) * counts["test"] / total) if counts["test"] else 0
    if not sentences or (counts["train"] and len(sentences) <= n_dev + n_test):
        raise ConfigError(f"only {len(sentences)} usable sentences: too few to give train, dev and test their own")
    return {"dev": sentences[:n_dev], "test": sentences[n_dev: n_dev + n_test], "train": sentences[n_dev + n_test:]}


def plan(cfg: SynthConfig) -> tuple[list[Job], dict]:
    """Every utterance of the corpus, in a fixed order, from the config alone; plus notes for the summary."""
    counts = {"train": cfg.num_train, "dev": cfg.num_dev, "test": cfg.num_test}
    notes: dict = {}
    if cfg.train_hours > 0:  # size train from a duration estimate over sample sentences
        probe = _sentence_splits(cfg, {"train": 200, "dev": 0, "test": 0}, {})["train"]
        mean = float(np.mean([_estimate_seconds(normalize(s), cfg) for _, s in probe]))
        counts["train"] = max(1, round(cfg.train_hours * 3600 / mean))
    voices = _voice_splits(cfg)
    sentences = _sentence_splits(cfg, counts, notes)
    augmenter = Augmenter(cfg.augment, SAMPLE_RATE)  # only draws params here
    jobs: list[Job] = []
    for k, split in enumerate(SPLITS):
        for i in range(counts[split]):
            rng = np.random.default_rng([cfg.seed, 3, k, i])
            src, text = sentences[split][i % len(sentences[split])]
            p = SynthParams(
                rate=int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
                pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                pitch_range=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
                volume=int(rng.integers(cfg.volume[0], cfg.volume[1] + 1)),
                word_gap=int(rng.integers(cfg.word_gap[0], cfg.word_gap[1] + 1)),
                lead_silence=round(float(rng.uniform(*cfg.silence)), 3),
                trail_silence=round(float(rng.uniform(*cfg.silence)), 3),
                level_db=round(float(rng.uniform(*cfg.level_db)), 2),
                espeak_seed=int(rng.integers(2**31)),
            )
            voice = voices[split][int(rng.integers(len(voices[split])))]
            aug = augmenter.sample(rng) if cfg.augment.active and split in cfg.augment_splits else None
            seed = int(rng.integers(2**63))
            jobs.append(Job(split, f"{split}-{i:06d}", text, normalize(text), src, voice, p, aug, seed))
    return jobs, notes


# ---- running the plan -------------------------------------------------------------------------------

_worker: dict = {}  # per-process Synthesizer and Augmenter, made by _init_worker


def _init_worker(augment: dict, babble_voices: list[Voice], data_dir: Path) -> None:
    synth = Synthesizer(data_dir=data_dir)
    cfg = from_dict(AugmentConfig, augment)
    babble = None
    if cfg.noise_prob > 0 and "babble" in cfg.noise_types:  # a few fixed utterances to mix into babble noise
        sents = generate_sentences(len(babble_voices), seed=12345)
        babble = [synth.synthesize(normalize(s), v) for (_, s), v in zip(sents, babble_voices)]
    _worker.update(synth=synth, augmenter=Augmenter(cfg, SAMPLE_RATE, babble))


def _run_job(job: Job, out_dir: Path) -> tuple[str, float]:
    """Synthesize, augment and save one utterance; returns (id, seconds)."""
    spoken = job.spoken + ("?" if job.text.rstrip().endswith("?") else ".")  # keep question intonation
    wave = _worker["synth"].synthesize(spoken, job.voice, job.params)
    if job.augment:
        wave = _worker["augmenter"].apply(wave, job.augment, np.random.default_rng(job.augment_seed))
        peak = float(np.abs(wave).max()) if len(wave) else 0.0
        if peak > 0.99:
            wave = wave * (0.99 / peak)
    save_audio(_audio_path(out_dir, job), wave, SAMPLE_RATE)
    return job.id, len(wave) / SAMPLE_RATE


def _audio_path(out_dir: Path, job: Job) -> Path:
    return out_dir / "audio" / job.split / f"{job.id}.flac"


def _saved_config(cfg: SynthConfig) -> dict:
    """What must match for a resume: the config without `workers`, plus a hash of every text file."""
    d = to_dict(cfg)
    d.pop("workers"), d.pop("strict")
    files = [Path(f) for f in cfg.text_files if Path(f).is_file()]
    d["text_file_sha256"] = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    return {"format": 1, "config": d}


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dict → {"a.b": value}, so a mismatch names the exact field."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _check_resume(out_dir: Path, saved: dict) -> None:
    path = out_dir / "synth_config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); delete it or use a new output folder") from None
        old_cfg, new_cfg = _flat(old.get("config", {})), _flat(json.loads(json.dumps(saved["config"])))
        diff = [k for k in sorted(set(old_cfg) | set(new_cfg)) if old_cfg.get(k) != new_cfg.get(k)]
        if diff:
            k = diff[0]
            more = f", and {len(diff) - 1} more" if len(diff) > 1 else ""
            raise ConfigError(
                f"{path}: folder was made with different arguments ({k}: {old_cfg.get(k)!r} there, "
                f"{new_cfg.get(k)!r} now{more}); use a new --out folder or delete this one"
            )
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: folder is not empty and has no synth_config.json; use a new or empty folder")
    atomic_write_text(path, json.dumps(saved, indent=2) + "\n")


def synthesize_corpus(cfg: SynthConfig, out_dir: str | os.PathLike, progress: bool = True) -> dict[str, Path]:
    """Synthesize (or finish) the corpus in `out_dir`; returns split → manifest path (splits with utterances).

    Writes OUT/audio/<split>/<id>.flac, OUT/<split>.jsonl, OUT/synth_config.json and OUT/synth_stats.json.
    With workers > 1 the worker processes are spawned: call this from under `if __name__ == "__main__":` in scripts.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    start = time.perf_counter()
    saved = _saved_config(cfg)  # hashes text files first: a missing file fails below with its name
    jobs, notes = plan(cfg)
    _check_resume(out_dir, saved)
    for split in SPLITS:  # temp files of a killed run (save_audio writes ".<id>.*.flac" then renames)
        for tmp in (out_dir / "audio" / split).glob(".*.flac"):
            tmp.unlink(missing_ok=True)
    done = {j.id: audio_duration(_audio_path(out_dir, j)) for j in jobs if _audio_path(out_dir, j).exists()}
    todo = [j for j in jobs if j.id not in done]
    new_seconds = 0.0
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    babble_voices = _voice_splits(cfg)["train"][:8]
    bar = tqdm(total=len(jobs), initial=len(done), unit="utt", disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()

    def record(result: tuple[str, float]) -> None:
        nonlocal new_seconds
        uid, seconds = result
        done[uid] = seconds
        new_seconds += seconds
        bar.update()
        bar.set_postfix_str(f"{new_seconds / max(time.perf_counter() - t0, 1e-9):.0f}x real time", refresh=False)

    with tempfile.TemporaryDirectory(prefix="malsori-espeak-") as tmp:  # one eSpeak data copy for all workers
        init_args = (to_dict(cfg.augment), babble_voices, english_data_copy(Path(tmp)))
        if todo and workers == 1:
            _init_worker(*init_args)
            for job in todo:
                record(_run_job(job, out_dir))
        elif todo:  # "spawn": workers start clean even when the caller has threads (torch) running
            with mp.get_context("spawn").Pool(workers, _init_worker, init_args) as pool:
                for result in pool.imap_unordered(functools.partial(_run_job, out_dir=out_dir), todo, chunksize=4):
                    record(result)
        _worker.clear()
    bar.close()
    manifests = _write_manifests(out_dir, jobs, done)
    stats = {
        "synthesized": len(todo), "skipped_existing": len(jobs) - len(todo),
        "seconds_synthesized": round(new_seconds, 2), "elapsed_s": round(time.perf_counter() - start, 2),
        "synthesis_s": round(time.perf_counter() - t0, 2), "workers": workers, **notes,
    }
    atomic_write_text(out_dir / "synth_stats.json", json.dumps(stats, indent=2) + "\n")
    return manifests


def _write_manifests(out_dir: Path, jobs: list[Job], durations: dict[str, float]) -> dict[str, Path]:
    """One manifest per split, written atomically, from the plan and the durations of the files."""
    out: dict[str, Path] = {}
    for split in SPLITS:
        split_jobs = [j for j in jobs if j.split == split]
        if not split_jobs:
            continue
        utts = []
        for j in split_jobs:
            extra = {"accent": j.voice.accent, "variant": j.voice.variant, **asdict(j.params), "source": j.source,
                     "text_normalized": j.spoken}
            if j.augment is not None:
                extra["augment"] = j.augment
            audio = f"audio/{split}/{j.id}.flac"
            utts.append(Utterance(j.id, audio, j.text, j.voice.name, round(durations[j.id], 4), extra))
        out[split] = write_manifest(out_dir / f"{split}.jsonl", utts)
    return out


def corpus_summary(manifests: dict[str, Path]) -> dict[str, dict]:
    """Size and diversity per split: utterances, hours, voices, accents, variants, distinct sentences, vocabulary."""
    from malsori.data.manifest import read_manifest

    out = {}
    for split, path in manifests.items():
        utts = read_manifest(path).utterances
        texts = {u.extra.get("text_normalized") or normalize(u.text) for u in utts}
        out[split] = {
            "utterances": len(utts), "hours": sum(u.duration for u in utts) / 3600,
            "voices": len({u.speaker for u in utts}), "accents": len({u.extra.get("accent") for u in utts}),
            "variants": len({u.extra.get("variant") for u in utts}), "sentences": len(texts),
            "vocabulary": len({w for t in texts for w in t.split()}),
        }
    return out
