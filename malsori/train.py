"""The training loop: read it top to bottom. Recipe → tokenizer, feature stats, model → AdamW steps → checkpoints → model dir.

Exact resume: batch order and augmentation are functions of (seed, epoch, index); checkpoints hold the model, the
optimizer, the RNG state and the position inside the epoch, so a run killed at any point and resumed logs the same
losses as an uninterrupted one. Multi-process training (torchrun) shards batches by rank and wraps the model in DDP.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from tqdm import tqdm

from malsori.checkpoint import average_checkpoints, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from malsori.config import bounded, from_dict, to_dict
from malsori.data.augment import AugmentConfig, Augmenter
from malsori.data.dataset import BatchConfig, BucketBatchSampler, SpeechDataset, collate, load_utterance_audio
from malsori.data.manifest import atomic_write_text, read_manifest
from malsori.errors import ConfigError, MalsoriError
from malsori.features import CMVNStats, Fbank, FbankConfig, GlobalCMVN, SpecAugment, SpecAugmentConfig
from malsori.metrics import ErrorRates, error_rates
from malsori.models.registry import ModelConfig, build_model
from malsori.pretrained import Recognizer, save_model_dir
from malsori.text import normalize
from malsori.tokenizer import Tokenizer, load_tokenizer, train_tokenizer


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
    strict: bool = False  # malformed manifest lines are errors instead of counted skips


@dataclass
class OptimConfig:
    """AdamW with linear warmup and inverse-square-root or cosine decay."""

    lr: float = bounded(2e-3, gt=0)  # peak learning rate, reached at the end of warmup
    betas: tuple[float, float] = bounded((0.9, 0.98), ge=0, lt=1)  # AdamW moment coefficients
    weight_decay: float = bounded(1e-3, ge=0)  # decoupled weight decay
    warmup_steps: int = bounded(300, ge=0)  # optimizer steps of linear warmup
    schedule: Literal["noam", "cosine", "constant"] = "noam"  # decay after warmup (cosine needs max_steps)
    min_lr: float = bounded(1e-5, ge=0)  # floor of the cosine schedule
    grad_clip: float = bounded(5.0, ge=0)  # max global gradient norm (0 = off)
    accum_grad: int = bounded(1, ge=1)  # batches whose gradients are summed per optimizer step


@dataclass
class TrainConfig:
    """A whole training run (one YAML recipe)."""

    out: str = "exp/run"  # experiment folder: checkpoints, logs, tokenizer, and the final model in out/model
    seed: int = bounded(0, ge=0)  # seeds model init, batch order, augmentation, dropout
    data: DataConfig = field(default_factory=DataConfig)  # manifests and targets
    features: FbankConfig = field(default_factory=FbankConfig)  # log-mel front-end
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)  # feature masking during training
    augment: AugmentConfig | None = None  # on-the-fly waveform augmentation (noise, reverb, speed); null = off
    batch: BatchConfig = field(default_factory=BatchConfig)  # dynamic batching
    model: ModelConfig = field(default_factory=ModelConfig)  # encoder + head
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    init_from: str = ""  # model folder whose tensors with matching names and shapes (e.g. the encoder) start a new run
    max_epochs: int = bounded(30, ge=1)  # passes over the training data
    max_steps: int = bounded(0, ge=0)  # stop after this many optimizer steps (0 = no limit)
    max_minutes: float = bounded(0.0, ge=0)  # wall-clock budget for this invocation (0 = none); stops after the current step
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for forward/loss (CPU or GPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = bounded(0, ge=0)  # torch CPU threads (0 = torch's default)
    checkpoint_every: int = bounded(200, ge=1)  # optimizer steps between checkpoints (one is also written after every epoch)
    keep_last: int = bounded(5, ge=0)  # checkpoints kept on disk (0 = all)
    average_last: int = bounded(3, ge=1)  # the final model averages this many newest checkpoints
    log_every: int = bounded(10, ge=1)  # optimizer steps between rows of log.csv
    progress: bool = True  # show a progress bar

    # Keys that may change between a run and its resumption.
    RESUMABLE_CHANGES = ("max_epochs", "max_steps", "max_minutes", "init_from", "progress", "threads", "checkpoint_every", "log_every", "device")


def warm_start(model: torch.nn.Module, folder: Path) -> int:
    """Copy the tensors of a saved model folder whose names and shapes match into `model`; returns how many."""
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"init_from: {folder} is not a malsori model folder (no model.safetensors)")
    own = model.state_dict()
    saved = {k: v for k, v in load_file(str(path)).items() if k in own and own[k].shape == v.shape}
    if not saved:
        raise ConfigError(f"init_from: no tensor of {folder} matches this model's names and shapes")
    model.load_state_dict(saved, strict=False)
    return len(saved)


def lr_at(step: int, o: OptimConfig, max_steps: int) -> float:
    """Learning rate for optimizer step `step` (1-based)."""
    warm = max(1, o.warmup_steps)
    if step <= warm:
        return o.lr * step / warm
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "cosine":
        if max_steps <= warm:
            raise ConfigError("optim.schedule=cosine needs max_steps > optim.warmup_steps")
        t = min(1.0, (step - warm) / (max_steps - warm))
        return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * t))
    return o.lr * math.sqrt(warm / step)


class _LossModule(torch.nn.Module):
    """Makes `compute_loss` the forward, so DistributedDataParallel sees the computation it must synchronize."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats, feat_lens, tokens, token_lens):
        return self.model.compute_loss(feats, feat_lens, tokens, token_lens)


class CsvLog:
    """Append-only CSV log (one file per stream) that survives restarts."""

    def __init__(self, path: Path, fields: list[str], enabled: bool = True):
        self.path, self.fields, self.enabled = path, fields, enabled
        if enabled and not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(fields)

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(k, "") for k in self.fields])


def _setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def _check_resumable(out: Path, cfg: TrainConfig) -> None:
    saved = out / "train_config.json"
    now = to_dict(cfg)
    if saved.exists():
        # read through the dataclasses, so fields added to malsori since the run started take their defaults
        old = to_dict(from_dict(TrainConfig, json.loads(saved.read_text()), "train_config.json"))
        diff = [k for k in set(old) | set(now) if k not in TrainConfig.RESUMABLE_CHANGES and old.get(k) != now.get(k)]
        if diff:
            raise ConfigError(f"{out} holds a run with a different config (differs in: {', '.join(sorted(diff))}); use another out= or delete it")


def prepare_tokenizer(cfg: TrainConfig, texts: list[str], out: Path) -> Tokenizer:
    """Load the run's tokenizer, or train it from the training texts the first time."""
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        return load_tokenizer(tok_dir)
    if cfg.data.tokenizer_dir:
        tokenizer = load_tokenizer(cfg.data.tokenizer_dir)
        tokenizer.save(tok_dir)
        return tokenizer
    vocab = None if cfg.data.tokenizer == "char" else cfg.data.vocab_size
    return train_tokenizer(cfg.data.tokenizer, texts, vocab, tok_dir)


def prepare_cmvn(cfg: TrainConfig, dataset: SpeechDataset, fbank: Fbank, out: Path) -> GlobalCMVN:
    """Global mean/variance from up to cmvn_utts evenly spaced utterances (cached in out/feature_stats.json)."""
    path = out / "feature_stats.json"
    if path.exists():
        return GlobalCMVN.from_dict(json.loads(path.read_text()))
    stats = CMVNStats(cfg.features.num_mel_bins)
    n = len(dataset)
    step = max(1, n // max(1, cfg.data.cmvn_utts))
    with torch.inference_mode():
        for i in range(0, n, step):
            item = dataset.utts[i]
            try:
                w = torch.from_numpy(load_utterance_audio(item))
            except MalsoriError:
                continue
            f, fl = fbank(w[None], torch.tensor([len(w)]))
            stats.update(f, fl)
    cmvn = GlobalCMVN.from_stats(stats)
    atomic_write_text(path, json.dumps(cmvn.to_dict()))
    return cmvn


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


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the final model directory."""
    rank, world = _setup_distributed()
    main_proc = rank == 0
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, cfg)
    if main_proc:
        atomic_write_text(out / "train_config.json", json.dumps(to_dict(cfg), indent=1))
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device, rank)

    sources, utts, source_of, weights = read_sources(cfg.data, main_proc)
    tokenizer = prepare_tokenizer(cfg, [normalize(u.text) for u in utts], out)
    augmenter = Augmenter.for_training(cfg.augment, utts, cfg.seed) if cfg.augment is not None else None
    dataset = SpeechDataset(utts, tokenizer.encode, normalize, augmenter, cfg.seed)
    fbank = Fbank(cfg.features)
    cmvn = prepare_cmvn(cfg, dataset, fbank, out)
    fbank, cmvn = fbank.to(device), cmvn.to(device)
    specaug = SpecAugment(cfg.specaug).to(device)

    model = build_model(cfg.model, cfg.features.num_mel_bins, tokenizer.vocab_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)
    step, epoch, pos = 0, 0, 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer)
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        if main_proc:
            tqdm.write(f"resuming from {ckpt.name}: step {step}, epoch {epoch}, batch {pos}")
    elif cfg.init_from:
        loaded = warm_start(model, Path(cfg.init_from))
        if main_proc:
            tqdm.write(f"initialized {loaded} tensors from {cfg.init_from}")
    net = _LossModule(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if main_proc:
        n_params = sum(p.numel() for p in model.parameters())
        tqdm.write(f"model: {cfg.model.encoder}-{cfg.model.head}, {n_params / 1e6:.2f} M parameters, vocab {tokenizer.vocab_size}, device {device}")

    sampler = BucketBatchSampler([u.duration for u in utts], cfg.batch, cfg.seed, rank, world,
                                 weights if len(sources) > 1 else None)
    per_source = [f"loss_{s.name}" for s in sources] if len(sources) > 1 else []
    log = CsvLog(out / "log.csv", ["step", "epoch", "loss", "lr", "audio_sec_per_sec", "elapsed"] + per_source, main_proc)
    vlog = CsvLog(out / "valid.csv", ["epoch", "step", "wer", "cer", "utterances"], main_proc)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    t0 = time.time()
    stop = False
    accum = max(1, cfg.optim.accum_grad)
    while epoch < cfg.max_epochs and not stop:
        sampler.set_epoch(epoch, skip=pos)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.batch.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (dropout, masks) untouched
        )
        bar = tqdm(loader, total=len(sampler) + pos, initial=pos, desc=f"epoch {epoch + 1}/{cfg.max_epochs}",
                   disable=not (cfg.progress and main_proc), dynamic_ncols=True)
        model.train()
        window_audio, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
        src_loss, src_n = [0.0] * len(sources), [0] * len(sources)
        for batch in bar:
            pos += 1
            if batch.waves.shape[0] == 0:
                continue
            waves, wave_lens = batch.waves.to(device), batch.wave_lens.to(device)
            with torch.no_grad():
                feats, feat_lens = fbank(waves, wave_lens)
                feats = specaug(cmvn(feats, feat_lens), feat_lens)
            with autocast:
                loss, stats = net(feats, feat_lens, batch.tokens.to(device), batch.token_lens.to(device))
            (loss / accum).backward()
            if per_source and "utt" in stats:
                for k, v in zip(batch.indices, stats["utt"].tolist()):
                    src_loss[source_of[k]] += v
                    src_n[source_of[k]] += 1
            window_audio += batch.audio_seconds * world
            window_loss += float(loss.detach())
            window_n += 1
            if pos % accum:
                continue
            step += 1
            lr = lr_at(step, cfg.optim, cfg.max_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step % cfg.log_every == 0 or step == 1:
                speed = window_audio / max(1e-9, time.time() - window_t)
                row = {"step": step, "epoch": epoch, "loss": f"{window_loss / window_n:.6f}", "lr": f"{lr:.3e}",
                       "audio_sec_per_sec": f"{speed:.1f}", "elapsed": f"{time.time() - t0:.1f}"}
                row.update({c: f"{src_loss[k] / src_n[k]:.4f}" for k, c in enumerate(per_source) if src_n[k]})
                log.write(row)
                src_loss, src_n = [0.0] * len(sources), [0] * len(sources)
                bar.set_postfix(loss=f"{window_loss / window_n:.3f}", lr=f"{lr:.1e}", speed=f"{speed:.0f}x")
                window_audio, window_t, window_loss, window_n = 0.0, time.time(), 0.0, 0
            if main_proc and step % cfg.checkpoint_every == 0:
                save_checkpoint(out, step, model, optimizer, {"epoch": epoch, "pos": pos}, cfg.keep_last)
            if (cfg.max_steps and step >= cfg.max_steps) or (cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes):
                stop = True
                break
        bar.close()
        if not stop:
            epoch, pos = epoch + 1, 0
        if main_proc:
            save_checkpoint(out, step, model, optimizer, {"epoch": epoch, "pos": pos}, cfg.keep_last)
            if cfg.data.valid and not stop:
                rates = validate(model, tokenizer, fbank, cmvn, cfg, device)
                vlog.write({"epoch": epoch, "step": step, "wer": f"{rates.wer:.4f}", "cer": f"{rates.cer:.4f}", "utterances": rates.utterances})
                tqdm.write(f"epoch {epoch}: valid {rates.line()}")
    if world > 1:
        dist.barrier()
    model_dir = out / "model"
    if main_proc:
        ckpts = list_checkpoints(out)[-max(1, cfg.average_last):]
        model.load_state_dict(average_checkpoints(ckpts))
        save_model_dir(model_dir, model, cfg.model, cfg.features, tokenizer, cmvn)
        tqdm.write(f"averaged {len(ckpts)} checkpoint(s) into {model_dir}")
    return model_dir


def validate(model, tokenizer, fbank, cmvn, cfg: TrainConfig, device) -> ErrorRates:
    """Greedy-decode up to max_valid_utts validation utterances and score them."""
    manifest = read_manifest(cfg.data.valid, strict=cfg.data.strict)
    utts = manifest.utterances
    if len(utts) > cfg.data.max_valid_utts:
        utts = [utts[i * len(utts) // cfg.data.max_valid_utts] for i in range(cfg.data.max_valid_utts)]
    rec = Recognizer(model, tokenizer, fbank, cmvn, device=device)
    hyps = rec.transcribe_utterances(utts)
    model.train()
    return error_rates([normalize(u.text) for u in utts], [h.text for h in hyps])
