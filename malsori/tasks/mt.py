"""Machine translation as a task: a parallel file (and its split file) → token pairs → batches of similar lengths up to
a token budget; loss = the attention encoder–decoder's label-smoothed cross-entropy; validation = greedy
translations of the dev sources scored by BLEU and chrF against all their references (sacrebleu; higher is
better); throughput in target tokens per second."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from tqdm import tqdm

from malsori.config import bounded, to_dict
from malsori.decode.options import DecodeOptions
from malsori.errors import ConfigError, MalsoriError
from malsori.mt.data import Multi, Pair, ParallelReadStats, group_references, read_parallel
from malsori.mt.model import TranslatorConfig, build_translator
from malsori.mt.split import read_split
from malsori.mt.translate import TextTranslator, evaluate_translations, pad_batch
from malsori.pretrained import write_model_dir
from malsori.tasks.base import RunConfig, Task, Validation, prepare_tokenizer


@dataclass
class ParallelDataConfig:
    """Where the pairs come from and how they become batches."""

    train: str = ""  # parallel file: TSV (source<TAB>target[<TAB>...]) or JSON Lines (source, target, id), .gz accepted
    split: str = ""  # split file (python -m experiments.mt.split): train on its train lines, validate on its dev lines
    valid: str = ""  # or a separate parallel file to validate on (when there is no split file)
    reverse: bool = False  # swap the columns: translate the file's target language into its source language
    strict: bool = True  # a malformed line stops the run (false: skipped and counted)
    tokenizer: Literal["bpe", "unigram", "char"] = "unigram"  # units of a tokenizer trained on both sides of the training pairs
    vocab_size: int = bounded(8000, ge=4)  # SentencePiece vocabulary size (joint over both languages)
    tokenizer_dir: str = ""  # use this tokenizer folder instead (e.g. a joint English–French–Korean vocabulary)
    tokenizer_lines: int = bounded(100000, ge=1)  # a new tokenizer learns from at most this many pairs (evenly spaced)
    max_tokens: int = bounded(3000, ge=1)  # a batch holds at most this many tokens of its longer side (padding included)
    max_len: int = bounded(80, ge=1)  # training pairs with a side longer than this many tokens are left out
    valid_sentences: int = bounded(200, ge=1)  # validate on at most this many dev sources (the first ones)
    char_bleu: bool = False  # BLEU over characters (targets without spaces between words: Korean, Japanese, Chinese)


@dataclass
class MTTrainConfig(RunConfig):
    """A translation run (a YAML recipe with `task: mt`)."""

    task: Literal["mt"] = "mt"  # machine translation
    data: ParallelDataConfig = field(default_factory=ParallelDataConfig)  # pairs, split and batches
    model: TranslatorConfig = field(default_factory=TranslatorConfig)  # which translator and its sizes


def read_pairs(d: ParallelDataConfig, stats: ParallelReadStats) -> tuple[list[Pair], list[Multi]]:
    """Training pairs and validation sources (grouped with all their references)."""
    if not d.train:
        raise ConfigError("data.train: no parallel training file given")
    pairs = read_parallel(d.train, d.strict, stats, d.reverse)
    valid: list[Pair] = []
    if d.split:
        split = read_split(d.split, d.train)
        pairs, valid = split.select(pairs, "train"), split.select(pairs, "dev")
    if d.valid:
        valid += read_parallel(d.valid, d.strict, stats, d.reverse)
    return pairs, group_references(valid)[: d.valid_sentences]


def length_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Pair indices sorted by (target, source) length and cut into batches whose padded longer side stays within
    `max_tokens`; the same for every epoch (only their order changes)."""
    order = np.lexsort((src_lens, tgt_lens))
    batches, start, widest = [], 0, 0
    for k, i in enumerate(order):
        w = max(int(src_lens[i]), int(tgt_lens[i]) + 1)
        if k > start and max(widest, w) * (k - start + 1) > max_tokens:
            batches.append(order[start:k])
            start, widest = k, w
        else:
            widest = max(widest, w)
    if start < len(order):
        batches.append(order[start:])
    return batches


class TranslationTask(Task):
    """A translator on parallel text: length-bucketed batches, label-smoothed cross-entropy, BLEU/chrF validation."""

    name = "mt"
    config_class = MTTrainConfig
    throughput_column = "target_tokens_per_sec"
    valid_columns = ["bleu", "chrf", "sentences"]

    def __init__(self, cfg: MTTrainConfig, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        super().__init__(cfg, out, device, rank, world, verbose)
        d = cfg.data
        stats = ParallelReadStats()
        pairs, self.valid = read_pairs(d, stats)
        step = max(1, math.ceil(len(pairs) / d.tokenizer_lines))
        texts = [t for p in pairs[::step] for t in (p.source, p.target)]
        self.tokenizer = prepare_tokenizer(d.tokenizer, d.vocab_size, d.tokenizer_dir, texts, out)
        src = [self.tokenizer.encode(p.source) for p in pairs]
        tgt = [self.tokenizer.encode(p.target) for p in pairs]
        keep = [i for i in range(len(pairs)) if 0 < len(src[i]) <= d.max_len and 0 < len(tgt[i]) <= d.max_len]
        if not keep:
            raise MalsoriError(f"{d.train}: no training pair within data.max_len = {d.max_len} tokens")
        self.src, self.tgt = [src[i] for i in keep], [tgt[i] for i in keep]
        self.batch_list = length_batches(np.array([len(s) for s in self.src]), np.array([len(t) for t in self.tgt]), d.max_tokens)
        if verbose:
            skipped = f", {len(stats.skipped):,} malformed lines skipped (first: {stats.skipped[0]})" if stats.skipped else ""
            tqdm.write(f"parallel text: {len(self.src):,} training pairs ({len(pairs) - len(keep):,} longer than {d.max_len} "
                       f"tokens left out), {sum(map(len, self.tgt)):,} target tokens, {len(self.batch_list):,} batches; "
                       f"validation: {len(self.valid):,} sources{skipped}")

    def build_model(self) -> torch.nn.Module:
        return build_translator(self.cfg.model, self.tokenizer.vocab_size)

    def describe(self, model: torch.nn.Module) -> str:
        return f"translator {self.cfg.model.kind}, vocab {self.tokenizer.vocab_size}"

    def batches(self, epoch: int, skip: int) -> tuple[Iterator[tuple[list[list[int]], list[list[int]]]], int]:
        """This rank's batches of `epoch` (their order a function of seed and epoch) after the first `skip`."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.batch_list))
        n = len(order) // self.world * self.world  # equal counts per rank
        mine = [self.batch_list[i] for i in order[self.rank : n : self.world]]
        gen = (([self.src[i] for i in b], [self.tgt[i] for i in b]) for b in mine[skip:])
        return gen, len(mine)

    def prepare(self, batch: tuple[list[list[int]], list[list[int]]]) -> tuple[torch.Tensor, ...]:
        src, tgt = batch
        return (*pad_batch(src, self.device), *pad_batch(tgt, self.device))

    def loss(self, model: torch.nn.Module, prepared: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        return model.compute_loss(*prepared)

    def amount(self, batch: tuple[list[list[int]], list[list[int]]]) -> float:
        return float(sum(len(t) + 1 for t in batch[1]))  # target tokens and each one's eos

    def validate(self, model: torch.nn.Module) -> Validation | None:
        if not self.valid:
            return None
        was_training = model.training
        result = evaluate_translations(TextTranslator(model, self.tokenizer, self.device), self.valid, DecodeOptions(),
                                       char_level=self.cfg.data.char_bleu)
        model.train(was_training)
        s = result.scores
        return Validation({"bleu": s.bleu, "chrf": s.chrf}, {"sentences": s.sentences}, f"greedy {s.line()}")

    def save_model(self, path: Path, model: torch.nn.Module) -> Path:
        return write_model_dir(path, "mt", model, {"model": to_dict(self.cfg.model)}, self.tokenizer)
