"""Training data: utterances → (waveform, token ids), duration-bucketed dynamic batches, and padding collate.

Features are computed per batch by the trainer (batched fbank is faster than per utterance), so items carry waveforms.
Batch order is a pure function of (seed, epoch): resuming mid-epoch replays the same batches from where it stopped.
Several sources mix by weight: an utterance of weight w is drawn floor(w) times per epoch, plus once more with
probability frac(w), so scarce real speech can be upsampled and a large synthetic set thinned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from malsori.audio import SAMPLE_RATE, iter_audio
from malsori.config import bounded
from malsori.data.manifest import Utterance
from malsori.errors import AudioError, ConfigError, MalsoriError


@dataclass
class BatchConfig:
    """How utterances are grouped into batches (each process's: under torchrun a step sees processes × accum_grad of them)."""

    max_frames: int = bounded(24000, ge=1)  # padded feature frames per batch (batch size × longest utterance, at 100 frames/s)
    max_batch_size: int = bounded(64, ge=1)  # upper bound on utterances per batch
    num_buckets: int = bounded(20, ge=1)  # duration buckets; batches are formed inside a bucket so padding stays small
    max_duration: float = bounded(30.0, gt=0)  # training utterances longer than this (seconds) are left out
    min_duration: float = bounded(0.1, ge=0)  # ... and shorter than this
    shuffle: bool = True  # shuffle utterances within buckets and the order of batches (seeded)
    num_workers: int = bounded(0, ge=0)  # DataLoader worker processes for audio decoding (0 = in the training process)

    def __post_init__(self) -> None:
        if self.min_duration > self.max_duration:
            raise ConfigError(f"min_duration {self.min_duration:g} is above max_duration {self.max_duration:g}")


@dataclass
class Batch:
    """A padded batch of waveforms and token ids."""

    ids: list[str]  # utterance ids
    indices: list[int]  # utterance indices in the dataset (to find each one's source)
    texts: list[str]  # normalized reference texts
    waves: torch.Tensor  # [B, S] float32, zero-padded
    wave_lens: torch.Tensor  # [B] samples
    tokens: torch.Tensor  # [B, U] int64, padded with 0
    token_lens: torch.Tensor  # [B]
    skipped: int = 0  # items dropped from this batch (unreadable audio)
    skip_reasons: list[str] = field(default_factory=list)  # why, one line per dropped item

    @property
    def audio_seconds(self) -> float:
        return float(self.wave_lens.sum()) / SAMPLE_RATE


class SpeechDataset(torch.utils.data.Dataset):
    """Reads one utterance: audio (honouring `offset`/`duration` extras for segmented recordings), augmentation, targets."""

    def __init__(
        self,
        utterances: Sequence[Utterance],
        encode: Callable[[str], list[int]],
        normalize: Callable[[str], str],
        augmenter: Callable | None = None,
        seed: int = 0,
        strict: bool = False,
    ):
        self.utts = list(utterances)
        self.strict = strict  # unreadable audio raises (in sample_waves; the trainer raises batch.skip_reasons) instead of being counted
        self.encode = encode
        self.normalize = normalize
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index) only, so they replay exactly on resume."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, draw: int) -> dict | None:
        """Item of draw `draw` = repeat × len(self) + utterance index (a repeated draw gets its own augmentation)."""
        i = draw % len(self.utts)
        u = self.utts[i]
        try:
            wave = load_utterance_audio(u)
        except AudioError as e:  # raised by the trainer in the main process when strict (a worker's would be a traceback)
            return {"id": u.id, "index": i, "error": str(e)}
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, draw])
            wave, _ = self.augmenter(wave, rng)
        text = self.normalize(u.text)
        return {"id": u.id, "index": i, "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), "text": text, "tokens": torch.tensor(self.encode(text), dtype=torch.long)}

    def sample_waves(self, count: int) -> Iterator[np.ndarray]:
        """The audio of up to `count` evenly spaced utterances (feature statistics), without augmentation; unreadable
        ones are passed over (raised when strict), and none readable at all is a MalsoriError."""
        n = len(self.utts)
        read, failed = 0, []
        for i in range(0, n, max(1, n // max(1, count))):
            try:
                wave = load_utterance_audio(self.utts[i])
            except AudioError as e:
                if self.strict:
                    raise
                failed.append(str(e))
                continue
            read += 1
            yield wave
        if not read:
            raise MalsoriError(f"no readable training audio: all {len(failed)} utterances tried failed (first: {failed[0] if failed else 'none'})")


def utterance_blocks(u: Utterance, sample_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """The utterance's samples in blocks (see malsori.audio.iter_audio); a Kaldi-style segment (`offset`,
    `duration` extras) is read from its recording alone."""
    if "offset" in u.extra:
        return iter_audio(u.audio_path, sample_rate, float(u.extra["offset"]), u.duration)
    return iter_audio(u.audio_path, sample_rate)


def load_utterance_audio(u: Utterance, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The utterance's samples, whole (training utterances are short; long ones are read with utterance_blocks)."""
    return np.concatenate(list(utterance_blocks(u, sample_rate)))


def collate(items: list[dict]) -> Batch:
    """Zero-pad waveforms and token ids into a Batch; unreadable items are dropped and counted."""
    good = [it for it in items if "error" not in it]
    waves = [it["wave"] for it in good]
    toks = [it["tokens"] for it in good]
    wave_lens = torch.tensor([len(w) for w in waves], dtype=torch.long)
    token_lens = torch.tensor([len(t) for t in toks], dtype=torch.long)
    W = torch.zeros(len(good), int(wave_lens.max()) if good else 0)
    T = torch.zeros(len(good), int(token_lens.max()) if good and token_lens.max() > 0 else 1, dtype=torch.long)
    for j, (w, t) in enumerate(zip(waves, toks)):
        W[j, : len(w)] = w
        T[j, : len(t)] = t
    return Batch([it["id"] for it in good], [it["index"] for it in good], [it["text"] for it in good], W, wave_lens, T, token_lens,
                 len(items) - len(good), [it["error"] for it in items if "error" in it])


@dataclass
class BucketBatchSampler:
    """Duration-bucketed dynamic batches, deterministic per (seed, epoch), sharded by rank for multi-process training."""

    durations: Sequence[float]  # seconds per utterance, in dataset order
    cfg: BatchConfig  # batching limits
    seed: int = 0  # base seed for shuffling
    rank: int = 0  # this process's index (DDP)
    world_size: int = 1  # number of processes (DDP)
    weights: Sequence[float] | None = None  # draws per epoch of each utterance (None = 1 each); fractions drawn at random
    epoch: int = 0  # current epoch; set with set_epoch
    skip: int = 0  # batches to skip at the start of this epoch (exact resume); reset by set_epoch
    where: str = "training data"  # what the durations come from (the manifests), for error messages
    _kept: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._kept = [i for i, d in enumerate(self.durations) if self.cfg.min_duration <= d <= self.cfg.max_duration]
        if self.weights is not None and len(self.weights) != len(self.durations):
            raise ValueError("BucketBatchSampler: one weight per utterance needed")
        if not self._kept or (self.weights is not None and not any(self.weights[i] > 0 for i in self._kept)):
            no_dur = sum(1 for d in self.durations if not d > 0)
            raise MalsoriError(
                f"{self.where}: no utterance to train on: of {len(self.durations)}, {no_dur} have no duration (write "
                f"`duration` in the manifest, e.g. with malsori data import) and none of the others lasts between "
                f"batch.min_duration={self.cfg.min_duration:g} and batch.max_duration={self.cfg.max_duration:g} s"
                + (" with a weight above 0" if self.weights is not None else ""))

    def draws(self) -> list[int]:
        """This epoch's draws, each repeat × N + index: utterance i appears floor(w) or floor(w) + 1 times (the extra
        draws come from their own generator, so weights of 1 give exactly the unweighted batches)."""
        if self.weights is None:
            return list(self._kept)
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        n = len(self.durations)
        w = np.asarray(self.weights, dtype=np.float64)[self._kept]
        whole = np.floor(w).astype(np.int64)
        count = whole + (rng.random(len(self._kept)) < w - whole)
        return [int(r) * n + i for i, c in zip(self._kept, count) for r in range(int(c))]

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches(self) -> list[list[int]]:
        """All batches of this epoch for this rank, before skipping."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.durations)
        order = sorted(self.draws(), key=lambda j: (self.durations[j % n], j))
        n_b = max(1, min(self.cfg.num_buckets, len(order)))
        buckets = [order[k * len(order) // n_b : (k + 1) * len(order) // n_b] for k in range(n_b)]
        out: list[list[int]] = []
        for b in buckets:
            if self.cfg.shuffle:
                b = list(rng.permutation(b))
            cur: list[int] = []
            longest = 0.0
            for i in b:
                frames = math.ceil(max(longest, self.durations[i % n]) * 100) * (len(cur) + 1)
                if cur and (frames > self.cfg.max_frames or len(cur) >= self.cfg.max_batch_size):
                    out.append(cur)
                    cur, longest = [], 0.0
                cur.append(int(i))
                longest = max(longest, self.durations[i % n])
            if cur:
                out.append(cur)
        if self.cfg.shuffle:
            out = [out[k] for k in rng.permutation(len(out))]
        if self.world_size > 1:
            n = len(out) // self.world_size * self.world_size  # equal counts so collective ops stay in step
            out = out[self.rank : n : self.world_size]
        return out

    def __iter__(self):
        return iter(self.batches()[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.skip)
