"""Decoder-only speech recognition as a task (`task: asr_llm`): a trained speech model's encoder (frozen or not) → a
projector → a trained GPT in the same tokens (LoRA or fully fine-tuned) writing the transcript after the audio prefix
(`malsori.llm.speech_prefix`). The front end's features — or, with the encoder frozen, its outputs — are computed
once per manifest and cached on disk (`malsori.llm.speech_cache`), so a sweep over strides, adapters and prompts
never recomputes them (no SpecAugment or waveform augmentation here: cached inputs are fixed). Validation: greedy
WER/CER; throughput in audio seconds per second; the model folder is a speech model folder (`malsori.llm.speech_folder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from tqdm import tqdm

from malsori.config import bounded
from malsori.data.manifest import read_manifest
from malsori.data.select import evenly_spaced
from malsori.errors import ConfigError
from malsori.llm.adapters import AdapterConfig
from malsori.llm.speech_cache import CachedFrames, cached_frames
from malsori.llm.speech_folder import build_decoder_only, save_speech_llm, source_folders
from malsori.llm.speech_prefix import DecoderOnlyASR, SpeechPrefixConfig
from malsori.metrics import error_rates
from malsori.tasks.base import RunConfig, Task, Validation
from malsori.text import normalize


@dataclass
class SpeechLLMDataConfig:
    """Which utterances train and validate, and where their cached frames live."""

    train: str = ""  # training manifest (JSON Lines)
    valid: str = ""  # validation manifest, greedy WER/CER at each validation; "" = none
    max_train_utts: int = bounded(0, ge=0)  # train on at most this many utterances, evenly spaced (0 = all)
    max_valid_utts: int = bounded(100, ge=1)  # validate on at most this many (evenly spaced)
    max_seconds: float = bounded(20.0, gt=0)  # leave longer training utterances out
    batch_size: int = bounded(16, ge=1)  # utterances per batch
    cache_dir: str = ""  # where cached frames are kept ("" = out/cache); one folder shared by a sweep's runs


@dataclass
class SpeechLLMTrainConfig(RunConfig):
    """A decoder-only speech recognition run (a YAML recipe with `task: asr_llm`)."""

    task: Literal["asr_llm"] = "asr_llm"  # decoder-only speech recognition
    encoder: str = "en-small"  # speech model folder (or released name) giving the encoder, front end, CMVN and tokenizer
    base: str = ""  # GPT folder in the same tokenizer (a `task: lm` run with data.tokenizer_dir = the speech model)
    prompt: str = ""  # text the GPT reads after the audio (or before it: prefix.prompt_position), before the transcript (e.g. a domain hint; normalized)
    prefix: SpeechPrefixConfig = field(default_factory=SpeechPrefixConfig)  # stride, projector width, encoder frozen
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  # lora (the GPT frozen) or full
    data: SpeechLLMDataConfig = field(default_factory=SpeechLLMDataConfig)  # manifests and batching


class SpeechLLMTask(Task):
    """Batches of cached frames + token ids; the loss reads only the transcript (and its final eos)."""

    name = "asr_llm"
    config_class = SpeechLLMTrainConfig
    throughput_column = "audio_sec_per_sec"
    valid_columns = ["wer", "cer", "utterances"]

    def __init__(self, cfg: SpeechLLMTrainConfig, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        super().__init__(cfg, out, device, rank, world, verbose)
        d = cfg.data
        if not cfg.base:
            raise ConfigError("base: no GPT folder given")
        if not d.train:
            raise ConfigError("data.train: no training manifest given")
        self.speech, self.lm = source_folders(cfg.encoder, cfg.base)
        self.tokenizer = self.lm.tokenizer
        self.stored = "encoder" if cfg.prefix.freeze_encoder else "features"
        cache = Path(d.cache_dir) if d.cache_dir else out / "cache"
        utts = [u for u in read_manifest(d.train).utterances if u.duration <= d.max_seconds]
        utts = evenly_spaced(utts, d.max_train_utts)
        self.train = self._frames(cache, "train", utts)
        self.valid: tuple[CachedFrames, list[str]] | None = None
        if d.valid:
            vutts = evenly_spaced(read_manifest(d.valid).utterances, d.max_valid_utts)
            self.valid = self._frames(cache, "valid", vutts)
        if len(self.train[0]) < d.batch_size:
            raise ConfigError(f"data.train: {len(self.train[0])} usable utterances, fewer than one batch ({d.batch_size})")
        self.seconds = self.train[0].offsets.diff().numpy() * self._frame_seconds()
        if verbose:
            tqdm.write(f"decoder-only ASR: {len(self.train[0]):,} training utterances ({self.seconds.sum() / 3600:.2f} h), "
                       f"{self.stored} cached in {cache}")

    def _frames(self, cache: Path, name: str, utts: list) -> tuple[CachedFrames, list[str]]:
        """Cached frames of `utts` and their normalized transcripts, in the same order."""
        frames = cached_frames(cache, name, utts, self.speech, self.stored, self.verbose)
        text = {u.id: normalize(u.text) for u in utts}
        return frames, [text[i] for i in frames.ids]

    def _frame_seconds(self) -> float:
        shift = self.speech.fbank.cfg.frame_shift_ms / 1000.0
        return shift * (self.speech.model.encoder.subsampling_factor if self.stored == "encoder" else 1)

    def build_model(self) -> torch.nn.Module:
        return build_decoder_only(self.speech, self.lm, self.cfg.prefix, self.cfg.adapter, self.cfg.prompt)

    def describe(self, model: torch.nn.Module) -> str:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return (f"decoder-only ASR: {self.speech.path} encoder ({'frozen' if self.cfg.prefix.freeze_encoder else 'trained'}) "
                f"→ stride {self.cfg.prefix.stride} → {self.cfg.adapter.kind} on {self.lm.path}; {trainable:,} trainable parameters")

    def batches(self, epoch: int, skip: int) -> tuple[Iterator[np.ndarray], int]:
        bs = self.cfg.data.batch_size
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.train[0]))
        batches = [order[i : i + bs] for i in range(0, len(order) - bs + 1, bs)]
        n = len(batches) // self.world * self.world
        mine = batches[self.rank : n : self.world]
        return iter(mine[skip:]), len(mine)

    def _inputs(self, frames: CachedFrames, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        lens = torch.tensor([frames.length(i) for i in rows])
        x = torch.zeros(len(rows), int(lens.max()), frames.frames.size(1))
        for r, i in enumerate(rows):
            x[r, : lens[r]] = frames.get(i)
        return x.to(self.device), lens.to(self.device)

    def prepare(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        rows = batch.tolist()
        ids = [self.tokenizer.encode(self.train[1][i]) for i in rows]
        tokens = torch.zeros(len(rows), max(1, max(map(len, ids))), dtype=torch.long)
        for r, t in enumerate(ids):
            tokens[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        token_lens = torch.tensor([len(t) for t in ids])
        return *self._inputs(self.train[0], rows), tokens.to(self.device), token_lens.to(self.device)

    def loss(self, model: DecoderOnlyASR, prepared: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        if self.stored == "encoder":
            return model.compute_loss_encoded(*prepared)
        return model.compute_loss(*prepared)

    def amount(self, batch: np.ndarray) -> float:
        return float(self.seconds[batch].sum())

    @torch.no_grad()
    def validate(self, model: DecoderOnlyASR) -> Validation | None:
        """Greedy-decode the validation utterances (from their cached frames) and score them."""
        if self.valid is None:
            return None
        frames, refs = self.valid
        was_training = model.training
        model.eval()
        hyps = []
        for start in range(0, len(frames), 16):
            x, lens = self._inputs(frames, list(range(start, min(start + 16, len(frames)))))
            decode = model.decode_encoded if self.stored == "encoder" else model.decode
            hyps += [self.tokenizer.decode(h.tokens) for h in decode(x, lens)]
        model.train(was_training)
        rates = error_rates(refs, [normalize(h) for h in hyps])
        return Validation({"wer": rates.wer, "cer": rates.cer}, {"utterances": rates.utterances}, rates.line())

    def save_model(self, path: Path, model: DecoderOnlyASR) -> Path:
        return save_speech_llm(path, model, self.speech, self.lm, self.cfg.adapter, self.cfg.prompt, self.tokenizer)
