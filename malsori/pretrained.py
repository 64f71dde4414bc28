"""A trained model on disk (a folder: config.json, model.safetensors, tokenizer files, feature_stats.json) and the
`Recognizer` that transcribes audio with it. Loading reads JSON and safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from malsori.audio import SAMPLE_RATE, iter_audio
from malsori.config import from_dict, to_dict
from malsori.data.manifest import Utterance
from malsori.decode.options import DecodeOptions
from malsori.errors import AudioError, MalsoriError
from malsori.features import Fbank, FbankConfig, GlobalCMVN
from malsori.models.registry import ModelConfig, build_model
from malsori.tokenizer import Tokenizer, load_tokenizer

FORMAT_VERSION = 1
RELEASED_MODELS = Path(__file__).resolve().parent.parent / "models"  # models released in the repository (en-small, ...)


def resolve_model(name: str | os.PathLike) -> Path:
    """A model folder from a path, or from a released model's name: a folder of that name in $MALSORI_MODELS
    (os.pathsep-separated) or in the repository's models/."""
    path = Path(name)
    if path.exists() or os.sep in str(name) or str(name).startswith("."):
        return path
    roots = [Path(p) for p in os.environ.get("MALSORI_MODELS", "").split(os.pathsep) if p] + [RELEASED_MODELS]
    for root in roots:
        if (root / str(name) / "config.json").is_file():
            return root / str(name)
    known = sorted({p.parent.name for r in roots if r.is_dir() for p in r.glob("*/config.json")})
    raise MalsoriError(f"{name}: no such model folder, and no released model of that name (released: {', '.join(known) or 'none'})")


def save_model_dir(path: Path, model: torch.nn.Module, model_cfg: ModelConfig, feat_cfg: FbankConfig, tokenizer: Tokenizer,
                   cmvn: GlobalCMVN, dtype: torch.dtype | None = None) -> Path:
    """Write the model folder under a temporary name and rename it into place (an old folder is replaced whole);
    `dtype` (e.g. torch.float16 for a release) stores floating-point tensors at that precision."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        config = {"format_version": FORMAT_VERSION, "model": to_dict(model_cfg), "features": to_dict(feat_cfg),
                  "vocab_size": tokenizer.vocab_size}
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "feature_stats.json").write_text(json.dumps(cmvn.to_dict()))
        tokenizer.save(tmp)
        old = path.with_name(path.name + ".old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


@dataclass
class Word:
    """A recognized word and its time span in seconds (from the token alignment)."""

    word: str
    start: float
    end: float


@dataclass
class Transcript:
    """One recognition result."""

    text: str  # normalized words
    tokens: list[int] = field(default_factory=list)  # token ids
    score: float = 0.0  # log-probability from the search
    words: list[Word] = field(default_factory=list)  # word timestamps
    id: str = ""  # utterance id or file path
    duration: float = 0.0  # seconds of audio

    def to_json(self) -> dict:
        score = round(self.score, 4) if math.isfinite(self.score) else None  # JSON has no NaN or Infinity
        return {"id": self.id, "text": self.text, "score": score, "duration": round(self.duration, 3),
                "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words]}


# a file, a 16 kHz waveform, a manifest utterance, or (transcribe_each only) an iterator of 16 kHz float32 blocks
AudioSource = Union[str, os.PathLike, np.ndarray, Utterance, Iterator[np.ndarray]]


class Recognizer:
    """Features → model → search → text, batched; long audio is read in blocks and cut at quiet points into bounded
    segments, so memory does not grow with the length of a file."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, fbank: Fbank, cmvn: GlobalCMVN, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.fbank = fbank.to(self.device)
        self.cmvn = cmvn.to(self.device)
        self.frame_shift = fbank.cfg.frame_shift_ms / 1000.0
        self.subsampling = int(getattr(getattr(model, "encoder", None), "subsampling_factor", 1))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "Recognizer":
        """Load a model folder written by save_model_dir, or a released model by name (`en-small`)."""
        path = resolve_model(path)
        if not (path / "config.json").is_file():
            raise MalsoriError(f"{path}: not a malsori model folder (no config.json)")
        try:
            config = json.loads((path / "config.json").read_text())
            model_cfg = from_dict(ModelConfig, config["model"], "model")
            feat_cfg = from_dict(FbankConfig, config["features"], "features")
            tokenizer = load_tokenizer(path)
            model = build_model(model_cfg, feat_cfg.num_mel_bins, tokenizer.vocab_size)
            model.load_state_dict(load_file(str(path / "model.safetensors")))
            cmvn = GlobalCMVN.from_dict(json.loads((path / "feature_stats.json").read_text()))
        except (OSError, KeyError, json.JSONDecodeError, RuntimeError) as e:
            raise MalsoriError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(model, tokenizer, Fbank(feat_cfg), cmvn, device)

    # -- public API ---------------------------------------------------------------------------------------------
    def transcribe(self, audio: AudioSource | Sequence[AudioSource], options: DecodeOptions | None = None,
                   batch_size: int = 16, max_segment_seconds: float = 30.0) -> Transcript | list[Transcript]:
        """Transcribe a file path or a 16 kHz waveform, or a list of them (then a list of results), searching as
        `options` say (default: greedy); an unreadable file raises its AudioError."""
        single = isinstance(audio, (str, os.PathLike, np.ndarray, Utterance))
        out = []
        for t in self.transcribe_each([audio] if single else audio, options, batch_size, max_segment_seconds):
            if isinstance(t, AudioError):
                raise t
            out.append(t)
        return out[0] if single else out

    def transcribe_utterances(self, utts: Sequence[Utterance], options: DecodeOptions | None = None, batch_size: int = 16) -> list[Transcript]:
        """Transcribe manifest utterances (Kaldi-style segments honoured); ids are copied onto the results."""
        return self.transcribe(list(utts), options, batch_size)

    def transcribe_each(self, items: Iterable[AudioSource], options: DecodeOptions | None = None, batch_size: int = 16,
                        max_segment_seconds: float = 30.0) -> Iterator[Transcript | AudioError]:
        """One result per item, in order, as soon as it is complete: its Transcript, or the AudioError that made it
        unreadable (so one bad file does not cost the others). An item may also be an iterator of 16 kHz float32
        blocks (audio made or arriving on the fly). Files are read in blocks and cut into segments of at
        most `max_segment_seconds`, decoded `batch_size` at a time: memory holds one batch of segments, whatever the
        files' lengths."""
        options = options or DecodeOptions()
        max_len = int(max_segment_seconds * SAMPLE_RATE)
        results: dict[int, Transcript | AudioError] = {}
        undecoded: dict[int, int] = {}  # item → its segments still waiting in `pending`
        pending: list[tuple[int, int, np.ndarray]] = []  # (item, start sample, samples)
        done = 0  # items before this one have been yielded

        def flush() -> None:
            order = sorted(range(len(pending)), key=lambda k: len(pending[k][2]))
            decoded = dict(zip(order, self._decode([pending[k][2] for k in order], options)))
            for k, (i, start, _) in enumerate(pending):  # in file order: segments of one file join in sequence
                _append(results[i], decoded[k], start)
                undecoded[i] -= 1
            pending.clear()

        for i, item in enumerate(items):
            results[i], undecoded[i], end = Transcript(text="", id=_source_id(item)), 0, 0
            try:
                for start, seg in cut_segments(_source_blocks(item), max_len):
                    pending.append((i, start, seg))
                    undecoded[i] += 1
                    end = start + len(seg)
                    if len(pending) >= batch_size:
                        flush()
            except AudioError as e:
                pending[:] = [p for p in pending if p[0] != i]
                results[i], undecoded[i] = e, 0
            else:
                results[i].duration = end / SAMPLE_RATE
            while done <= i and undecoded[done] == 0:
                yield _finished(results.pop(done))
                done += 1
        if pending:
            flush()
        while done in results:
            yield _finished(results.pop(done))
            done += 1

    def transcribe_waves(self, waves: list[np.ndarray], options: DecodeOptions | None = None, batch_size: int = 16,
                         max_segment_seconds: float = 30.0) -> list[Transcript]:
        """Cut waveforms already in memory into segments, decode all segments in length-sorted batches (least padding
        over the whole set), and join per waveform."""
        segments = [(wi, start, seg) for wi, w in enumerate(waves)
                     for start, seg in cut_segments([w], int(max_segment_seconds * SAMPLE_RATE))]
        order = sorted(range(len(segments)), key=lambda k: len(segments[k][2]))
        results: list[Transcript | None] = [None] * len(segments)
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for k, t in zip(idx, self._decode([segments[k][2] for k in idx], options or DecodeOptions())):
                results[k] = t
        joined = [Transcript(text="", duration=len(w) / SAMPLE_RATE) for w in waves]
        for (wi, start, _), t in zip(segments, results):
            _append(joined[wi], t, start)
        return [_finished(j) for j in joined]

    def stream(self, cfg=None):
        """A `malsori.streaming.Stream` on this model: feed audio in pieces, read partial and final results."""
        from malsori.streaming import Stream

        return Stream(self, cfg)

    # -- internals ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(self, waves: list[np.ndarray], options: DecodeOptions) -> list[Transcript]:
        lens = torch.tensor([len(w) for w in waves])
        batch = torch.zeros(len(waves), int(lens.max()))
        for i, w in enumerate(waves):
            batch[i, : len(w)] = torch.from_numpy(w)
        feats, feat_lens = self.fbank(batch.to(self.device), lens.to(self.device))
        feats = self.cmvn(feats, feat_lens)
        hyps = self.model.decode(feats, feat_lens, options)
        return [Transcript(text="", tokens=list(h.tokens), score=float(h.score), words=self._words(h.tokens, h.token_frames)) for h in hyps]

    def _words(self, tokens: list[int], frames: list[int]) -> list[Word]:
        """Group tokens into words at word-start pieces; times from the frames where tokens were emitted."""
        step = self.subsampling * self.frame_shift
        groups: list[list[tuple[int, int]]] = []
        for tok, fr in zip(tokens, frames):
            if not groups or self.tokenizer.is_word_start(tok):
                groups.append([])
            groups[-1].append((tok, fr))
        words = []
        for g in groups:
            text = self.tokenizer.decode([t for t, _ in g]).strip()
            for k, piece in enumerate(text.split()):  # a group can hold several words if the tokenizer says so
                words.append(Word(piece, g[0][1] * step, (g[-1][1] + 1) * step))
        return words


def _source_id(item: AudioSource) -> str:
    return item.id if isinstance(item, Utterance) else str(item) if isinstance(item, (str, os.PathLike)) else ""


def _source_blocks(item: AudioSource) -> Iterable[np.ndarray]:
    if isinstance(item, np.ndarray):
        return [item.astype(np.float32, copy=False)]
    if isinstance(item, Iterator):
        return item
    if isinstance(item, Utterance):
        from malsori.data.dataset import utterance_blocks

        return utterance_blocks(item)
    return iter_audio(item)


def _append(joined: Transcript, t: Transcript, start: int) -> None:
    """Add a segment's result (decoded from sample `start` on) to its file's result."""
    off = start / SAMPLE_RATE
    joined.tokens += t.tokens
    joined.score += t.score
    joined.words += [Word(w.word, w.start + off, w.end + off) for w in t.words]


def _finished(t: Transcript | AudioError) -> Transcript | AudioError:
    if isinstance(t, Transcript):
        t.text = " ".join(w.word for w in t.words)
    return t


def cut_segments(blocks: Iterable[np.ndarray], max_len: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, samples): a stream of blocks cut into pieces of at most max_len samples, each cut at the
    quietest 10 ms in its last quarter; holds at most max_len samples plus one block."""
    hop = SAMPLE_RATE // 100
    buf, start = np.zeros(0, np.float32), 0
    for x in blocks:
        buf = np.concatenate([buf, x]) if len(buf) else np.asarray(x, dtype=np.float32)
        while len(buf) > max_len:
            lo = 3 * max_len // 4
            region = buf[lo:max_len]
            frames = region[: len(region) // hop * hop].reshape(-1, hop)
            cut = lo + int(np.argmin((frames**2).sum(1))) * hop + hop // 2 if len(frames) else max_len
            yield start, buf[:cut].copy()
            start, buf = start + cut, buf[cut:]
    if len(buf):
        yield start, buf.copy()


def split_points(wave: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Where `cut_segments` cuts a whole waveform: (start, end) sample pairs."""
    return [(start, start + len(seg)) for start, seg in cut_segments([wave], max_len)]


def bound_heap() -> None:
    """For a process that decodes long audio (the transcribe, eval and stream commands): glibc gives allocations over
    128 KiB their own mapping, but raises that threshold as such blocks are freed; the heap then fragments under the
    ever-changing tensor sizes of decoding and the resident size creeps up (~40 MiB an hour of audio, measured in
    benchmarks/bench_memory.py). Freezing the threshold at 128 KiB keeps it flat. A no-op where malloc is not glibc's."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def load(path: str | os.PathLike, device: str = "auto") -> Recognizer:
    """`malsori.load("exp/run/model").transcribe("file.wav")`."""
    return Recognizer.load(path, device)
