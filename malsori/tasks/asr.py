"""Speech recognition as a task: manifests → waveforms (augmented) → fbank → CMVN → SpecAugment → model loss;
batches counted in seconds of audio, validation by WER/CER, throughput in audio seconds per second."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import torch
from tqdm import tqdm

from malsori.config import bounded
from malsori.data.augment import AugmentConfig, Augmenter
from malsori.data.dataset import Batch, BatchConfig, BucketBatchSampler, SpeechDataset, collate
from malsori.data.manifest import atomic_write_json, read_manifest
from malsori.data.select import evenly_spaced
from malsori.errors import AudioError, ConfigError, MalsoriError
from malsori.features import CMVNStats, Fbank, FbankConfig, GlobalCMVN, SpecAugment, SpecAugmentConfig
from malsori.metrics import error_rates
from malsori.models.registry import ModelConfig, build_model
from malsori.pretrained import Recognizer, save_model_dir
from malsori.tasks.base import RunConfig, Task, Validation, prepare_tokenizer
from malsori.text import normalize


@dataclass
class SourceConfig:
    """One training manifest in a weighted mixture."""

    manifest: str = ""  # JSON Lines manifest
    weight: float = bounded(1.0, ge=0)  # draws of each of its utterances per epoch (2 = upsample twice, 0.5 = a random half)
    name: str = ""  # name in the logs (default: the manifest's file name without extension)

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.manifest).stem


@dataclass
class DataConfig:
    """Where the training data comes from and how targets are made."""

    train: str = ""  # training manifest (JSON Lines); or list several in `sources`
    sources: list[SourceConfig] = field(default_factory=list)  # weighted training manifests, each with its own loss column
    valid: str = ""  # validation manifest, scored (WER/CER) after each epoch; "" = none
    max_valid_utts: int = bounded(200, ge=1)  # validate on at most this many utterances (evenly spaced through the manifest)
    tokenizer: Literal["char", "bpe", "unigram"] = "char"  # output units
    vocab_size: int = bounded(256, ge=1)  # SentencePiece vocabulary size (ignored for char)
    tokenizer_dir: str = ""  # use this trained tokenizer folder (`malsori tokenizer train`) instead of training one
    cmvn_utts: int = bounded(300, ge=1)  # utterances (evenly spaced) used to estimate the global feature mean/variance
    strict: bool = False  # malformed manifest lines and unreadable audio are errors instead of counted skips


@dataclass
class TrainConfig(RunConfig):
    """A speech recognition run (one YAML recipe; `task: asr` or no task)."""

    task: Literal["asr"] = "asr"  # speech recognition
    data: DataConfig = field(default_factory=DataConfig)  # manifests and targets
    features: FbankConfig = field(default_factory=FbankConfig)  # log-mel front-end
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)  # feature masking during training
    augment: AugmentConfig | None = None  # on-the-fly waveform augmentation (noise, reverb, speed); null = off
    batch: BatchConfig = field(default_factory=BatchConfig)  # dynamic batching
    model: ModelConfig = field(default_factory=ModelConfig)  # encoder + head


def read_sources(cfg: DataConfig, verbose: bool = True) -> tuple[list[SourceConfig], list, list[int], list[float]]:
    """The training sources (`data.sources`, or `data.train` alone), their utterances concatenated, each utterance's
    source index and its weight."""
    if cfg.sources and cfg.train:
        raise ConfigError("data.train and data.sources: give one of them (list data.train's manifest among the sources)")
    missing = [k for k, s in enumerate(cfg.sources) if not s.manifest]
    if missing:
        raise ConfigError(f"data.sources[{missing[0]}].manifest: no manifest given")
    sources = cfg.sources or [SourceConfig(manifest=cfg.train)]
    if not sources[0].manifest:
        raise ConfigError("data.train: no training manifest given (set data.train or data.sources)")
    utts, source_of, weights = [], [], []
    for k, src in enumerate(sources):
        manifest = read_manifest(src.manifest, strict=cfg.strict)
        if verbose:
            tqdm.write(f"{manifest.summary()} (weight {src.weight:g})" if len(sources) > 1 else manifest.summary())
        utts += manifest.utterances
        source_of += [k] * len(manifest)
        weights += [src.weight] * len(manifest)
    if not utts:
        raise MalsoriError(f"{', '.join(s.manifest for s in sources)}: no usable utterances")
    return sources, utts, source_of, weights


def prepare_cmvn(cfg: TrainConfig, dataset: SpeechDataset, fbank: Fbank, out: Path) -> GlobalCMVN:
    """Global mean/variance from up to cmvn_utts evenly spaced utterances (cached in out/feature_stats.json)."""
    path = out / "feature_stats.json"
    if path.exists():
        return GlobalCMVN.from_dict(json.loads(path.read_text()))
    stats = CMVNStats(cfg.features.num_mel_bins)
    with torch.inference_mode():
        for wave in dataset.sample_waves(cfg.data.cmvn_utts):
            w = torch.from_numpy(wave)
            f, fl = fbank(w[None], torch.tensor([len(w)]))
            stats.update(f, fl)
    cmvn = GlobalCMVN.from_stats(stats)
    atomic_write_json(path, cmvn.to_dict())
    return cmvn


class SpeechTask(Task):
    """Speech recognition: duration-bucketed batches of waveforms, features on the device, `model.compute_loss`."""

    name = "asr"
    config_class = TrainConfig
    throughput_column = "audio_sec_per_sec"
    valid_columns = ["wer", "cer", "utterances"]

    def __init__(self, cfg: TrainConfig, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        super().__init__(cfg, out, device, rank, world, verbose)
        self.sources, utts, self.source_of, weights = read_sources(cfg.data, verbose)
        self.tokenizer = prepare_tokenizer(cfg.data.tokenizer, cfg.data.vocab_size, cfg.data.tokenizer_dir,
                                           [normalize(u.text) for u in utts], out)
        augmenter = Augmenter.for_training(cfg.augment, utts, cfg.seed) if cfg.augment is not None else None
        self.dataset = SpeechDataset(utts, self.tokenizer.encode, normalize, augmenter, cfg.seed, cfg.data.strict)
        fbank = Fbank(cfg.features)
        self.cmvn = prepare_cmvn(cfg, self.dataset, fbank, out).to(device)
        self.fbank = fbank.to(device)
        self.specaug = SpecAugment(cfg.specaug).to(device)
        self.sampler = BucketBatchSampler([u.duration for u in utts], cfg.batch, cfg.seed, rank, world,
                                          weights if len(self.sources) > 1 else None,
                                          where=", ".join(src.manifest for src in self.sources))
        self.per_source = [f"loss_{s.name}" for s in self.sources] if len(self.sources) > 1 else []
        self._reset_sources()

    def build_model(self) -> torch.nn.Module:
        return build_model(self.cfg.model, self.cfg.features.num_mel_bins, self.tokenizer.vocab_size)

    def describe(self, model: torch.nn.Module) -> str:
        return f"{self.cfg.model.encoder}-{self.cfg.model.head}, vocab {self.tokenizer.vocab_size}"

    def batches(self, epoch: int, skip: int) -> tuple[Iterable[Batch], int]:
        self.skipped, self.read = [], 0  # unreadable utterances this epoch (reported at its end), utterances read
        self.sampler.set_epoch(epoch, skip=skip)
        self.dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=self.sampler, collate_fn=collate, num_workers=self.cfg.batch.num_workers,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # keeps the global RNG (dropout, masks) untouched
        )
        return loader, len(self.sampler) + skip

    def prepare(self, batch: Batch) -> tuple | None:
        if batch.skip_reasons and self.cfg.data.strict:
            raise AudioError(f"{batch.skip_reasons[0]} (data.strict=true)")
        self.skipped += batch.skip_reasons
        self.read += len(batch.ids)
        if batch.waves.shape[0] == 0:
            return None
        waves, wave_lens = batch.waves.to(self.device), batch.wave_lens.to(self.device)
        with torch.no_grad():
            feats, feat_lens = self.fbank(waves, wave_lens)
            feats = self.specaug(self.cmvn(feats, feat_lens), feat_lens)
        return feats, feat_lens, batch.tokens.to(self.device), batch.token_lens.to(self.device)

    def epoch_done(self, epoch: int) -> None:
        if self.skipped and not self.read:
            raise MalsoriError(f"epoch {epoch + 1}: all {len(self.skipped)} utterances drawn were unreadable (first: {self.skipped[0]})")
        if self.skipped and self.verbose:
            tqdm.write(f"epoch {epoch + 1}: {len(self.skipped)} utterance(s) skipped, unreadable audio (first: "
                       f"{self.skipped[0]}; data.strict=true makes this an error)")

    def loss(self, model: torch.nn.Module, prepared: tuple) -> tuple[torch.Tensor, dict]:
        return model.compute_loss(*prepared)

    def amount(self, batch: Batch) -> float:
        return batch.audio_seconds

    def log_columns(self) -> list[str]:
        return self.per_source

    def _reset_sources(self) -> None:
        self.src_loss, self.src_n = [0.0] * len(self.sources), [0] * len(self.sources)

    def observe(self, batch: Batch, stats: dict) -> None:
        if self.per_source and "utt" in stats:
            for k, v in zip(batch.indices, stats["utt"].tolist()):
                self.src_loss[self.source_of[k]] += v
                self.src_n[self.source_of[k]] += 1

    def log_values(self) -> dict[str, str]:
        row = {c: f"{self.src_loss[k] / self.src_n[k]:.4f}" for k, c in enumerate(self.per_source) if self.src_n[k]}
        self._reset_sources()
        return row

    def validate(self, model: torch.nn.Module) -> Validation | None:
        """Greedy-decode up to max_valid_utts validation utterances and score them."""
        if not self.cfg.data.valid:
            return None
        utts = read_manifest(self.cfg.data.valid, strict=self.cfg.data.strict).utterances
        utts = evenly_spaced(utts, self.cfg.data.max_valid_utts)
        hyps = Recognizer(model, self.tokenizer, self.fbank, self.cmvn, device=self.device).transcribe_utterances(utts)
        model.train()
        rates = error_rates([normalize(u.text) for u in utts], [h.text for h in hyps])
        return Validation({"wer": rates.wer, "cer": rates.cer}, {"utterances": rates.utterances}, rates.line())

    def save_model(self, path: Path, model: torch.nn.Module) -> Path:
        return save_model_dir(path, model, self.cfg.model, self.cfg.features, self.tokenizer, self.cmvn)
