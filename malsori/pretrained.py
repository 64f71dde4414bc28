"""A trained model on disk and the `Recognizer` that transcribes audio with it. Loading reads JSON and safetensors
only; nothing is unpickled.

A model folder holds config.json (format_version, task, the model's config, vocab_size, the weights' sha256),
model.safetensors and the tokenizer files; a speech model adds its front-end (config.json "features") and
feature_stats.json (CMVN). Version 1 folders (before tasks; no task, no checksum) load as speech models.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from malsori.audio import SAMPLE_RATE, iter_audio
from malsori.config import from_dict, to_dict
from malsori.data.manifest import Utterance
from malsori.device import check_device
from malsori.decode.options import DecodeOptions
from malsori.errors import AudioError, ConfigError, MalsoriError
from malsori.features import Fbank, FbankConfig, GlobalCMVN
from malsori.files import follow_umask, read_json, sha256_of, strict_json
from malsori.models.registry import LMConfig, ModelConfig, build_lm, build_model
from malsori.nn.load import load_state_dict_strict
from malsori.tokenizer import Tokenizer, load_tokenizer
from malsori.transcript import Transcript, Word

FORMAT_VERSION = 2  # 2: task and weights_sha256 in config.json; 1: speech only, no checksum
RELEASED_MODELS = Path(__file__).resolve().parent.parent / "models"  # models released in the repository (en-small, ...)

# Tasks whose folders name other folders (decoder-only ASR: an encoder's and a GPT's) are defined in rooms above
# this one, which import it; they are named here, not imported, so `load_model_dir` reads every folder while the
# package's import graph stays acyclic (docs/architecture.md, "The model folder").
COMPOSITE_FOLDERS: dict[str, tuple[str, str]] = {"asr_llm": ("malsori.llm.speech_folder", "load_speech_llm")}


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


def model_task(name: str | os.PathLike) -> str:
    """The task a model folder was trained for (config.json's `task`; asr when it has none or cannot be read, so
    that loading it reports the problem)."""
    try:
        config = json.loads((resolve_model(name) / "config.json").read_text(encoding="utf-8"))
        return str(config.get("task", "asr")) if config.get("format_version", 1) >= 2 else "asr"
    except (OSError, ValueError, AttributeError, TypeError):
        return "asr"


def write_model_dir(path: Path, task: str, model: torch.nn.Module, config: dict, tokenizer: Tokenizer,
                    files: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a model folder of `task` under a temporary name and rename it into place (an old folder is replaced
    whole): config.json = format_version, task, vocab_size, weights_sha256 and `config`; the weights; the
    tokenizer; `files` (name → text). `dtype` (e.g. torch.float16 for a release) stores floating-point tensors at
    that precision."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    tmp = moved = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "task": task, **config, "vocab_size": tokenizer.vocab_size,
                "weights_sha256": sha256_of(tmp / "model.safetensors")}
        (tmp / "config.json").write_text(strict_json(meta, str(path / "config.json"), indent=1), encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        tokenizer.save(tmp)
        follow_umask(tmp)  # mkdtemp and safetensors make it private; the folder is shared like any other
        shutil.rmtree(old, ignore_errors=True)  # what a run killed between the two renames below left
        if path.exists():
            os.replace(path, old)
            moved = old
        os.replace(tmp, path)
        moved = None
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if moved is not None and not path.exists():
            os.replace(moved, path)  # the previous model goes back where it was
        if isinstance(e, OSError):
            kept = "the previous model folder there is unchanged" if path.exists() else "nothing was written there"
            raise MalsoriError(f"{path}: cannot write the model folder ({e.strerror or e}); {kept}") from None
        raise
    return path


def save_model_dir(path: Path, model: torch.nn.Module, model_cfg: ModelConfig, feat_cfg: FbankConfig, tokenizer: Tokenizer,
                   cmvn: GlobalCMVN, dtype: torch.dtype | None = None) -> Path:
    """Write a speech model's folder: its model and front-end configs, CMVN statistics, tokenizer and weights."""
    return write_model_dir(path, "asr", model, {"model": to_dict(model_cfg), "features": to_dict(feat_cfg)}, tokenizer,
                           {"feature_stats.json": strict_json(cmvn.to_dict(), str(path / "feature_stats.json"))}, dtype)


@dataclass
class ModelDir:
    """A loaded model folder: the task it was trained for, the model (eval mode, on the CPU) and its tokenizer;
    the front-end and CMVN for speech models only."""

    path: Path  # the folder
    task: str  # asr | lm
    config: dict  # config.json as read
    model: torch.nn.Module  # weights loaded
    tokenizer: Tokenizer  # the model's units
    fbank: Fbank | None = None  # speech front-end (asr)
    cmvn: GlobalCMVN | None = None  # feature normalization (asr)


def _load_weights(path: Path, model: torch.nn.Module, sha256: str | None) -> None:
    """Load model.safetensors into `model` after checking its checksum, names and shapes; one-line errors."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise MalsoriError(f"{weights}: weights file not found")
    if sha256 is not None and sha256_of(weights) != sha256:
        raise MalsoriError(f"{weights}: checksum mismatch (sha256 differs from config.json's weights_sha256): the file is corrupt or was replaced")
    try:
        saved = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise MalsoriError(f"{weights}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    load_state_dict_strict(model, saved, str(weights))


def load_model_dir(path: str | os.PathLike) -> ModelDir:
    """Load any model folder (a path, or a released model's name), checking format version, checksum, tensor names
    and shapes and vocabulary size; every problem is one MalsoriError naming the file."""
    path = resolve_model(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise MalsoriError(f"{path}: not a malsori model folder (no config.json)")
    config = read_json(cfg_path)
    if not isinstance(config, dict):
        raise MalsoriError(f"{cfg_path}: not a JSON object, but {type(config).__name__}")
    version = config.get("format_version", 1)
    if version not in (1, FORMAT_VERSION):
        raise MalsoriError(f"{cfg_path}: format_version {version!r} is unknown to this malsori (it reads 1 and "
                           f"{FORMAT_VERSION}); a newer malsori wrote it?")
    task = config.get("task", "asr") if version >= 2 else "asr"
    tokenizer = load_tokenizer(path)
    if "vocab_size" in config and config["vocab_size"] != tokenizer.vocab_size:
        raise MalsoriError(f"{path / 'tokenizer.json'}: the tokenizer has {tokenizer.vocab_size} tokens, config.json's "
                           f"vocab_size is {config['vocab_size']}")
    if task in COMPOSITE_FOLDERS:  # a folder built on other folders, read by the room that defines its task
        module, function = COMPOSITE_FOLDERS[task]
        return getattr(importlib.import_module(module), function)(path, config)
    fbank = cmvn = None
    try:
        if task == "asr":
            feat_cfg = from_dict(FbankConfig, config["features"], "features")
            model = build_model(from_dict(ModelConfig, config["model"], "model"), feat_cfg.num_mel_bins, tokenizer.vocab_size)
            fbank = Fbank(feat_cfg)
            cmvn = GlobalCMVN.from_dict(json.loads((path / "feature_stats.json").read_text(encoding="utf-8")))
        elif task == "lm":
            model = build_lm(from_dict(LMConfig, config["model"], "model"), tokenizer.vocab_size)
        elif task == "mt":
            from malsori.mt.model import TranslatorConfig
            from malsori.mt.model import build_translator

            model = build_translator(from_dict(TranslatorConfig, config["model"], "model"), tokenizer.vocab_size)
        else:
            raise MalsoriError(f"{cfg_path}: unknown task {task!r} (known: asr, asr_llm, lm, mt)")
    except ConfigError as e:
        raise MalsoriError(f"{cfg_path}: {e}") from None
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise MalsoriError(f"{path}: cannot load model ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    _load_weights(path, model, config.get("weights_sha256") if version >= 2 else None)
    return ModelDir(path, task, config, model.eval(), tokenizer, fbank, cmvn)


def load_task_model(path: str | os.PathLike, task: str, what: str, device: str = "auto") -> tuple[ModelDir, str]:
    """A model folder of `task` (any other is refused: "…, not `what`") and the device to run it on (auto: CUDA
    when there is one; a device the machine lacks is a ConfigError)."""
    check_device(str(device))
    m = load_model_dir(path)
    if m.task != task:
        raise MalsoriError(f"{m.path}: a model of task {m.task!r}, not {what}")
    return m, ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


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
        """Load a speech model folder, or a released model by name (`en-small`), onto `device` (auto, cpu, cuda,
        cuda:N; one the machine lacks is a ConfigError)."""
        m, device = load_task_model(path, "asr", "a speech recognizer", device)
        return cls(m.model, m.tokenizer, m.fbank, m.cmvn, device)

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

    @torch.inference_mode()
    def encode(self, wave: np.ndarray) -> torch.Tensor:
        """One 16 kHz utterance's encoder output [1, T', D] (front end, CMVN, encoder): what every head reads, for
        experiments that run the encoder once and decode or train heads on it."""
        lens = torch.tensor([len(wave)], device=self.device)
        feats, feat_lens = self.fbank(torch.from_numpy(wave)[None].to(self.device), lens)
        return self.model.encoder(self.cmvn(feats, feat_lens), feat_lens)[0]

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
        step = self.subsampling * self.frame_shift
        return [Transcript(text="", tokens=list(h.tokens), score=float(h.score), words=self._words(h.tokens, h.token_frames),
                           token_times=[f * step for f in h.token_frames] if len(h.token_frames) == len(h.tokens) else [])
                for h in hyps]

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
    joined.token_times += [x + off for x in t.token_times]


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
