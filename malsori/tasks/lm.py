"""Language modelling as a task: text files → normalized lines → tokens → one stream (each line followed by the
end-of-sentence id) cut into fixed-length blocks; loss = next-token cross-entropy; validation = perplexity per
token and per word (so LMs with different tokenizers compare); throughput in tokens per second.
With `base` (a pretrained LM folder) the run adapts that GPT on the text instead (`adapter`: full fine-tuning,
prompt tuning or LoRA, `malsori.llm.adapters`), in the base's tokens and normalization; it writes an adapter folder
(a whole LM folder for full fine-tuning), e.g. a fusion LM adapted to a recognizer's domain."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from malsori.config import bounded, to_dict
from malsori.errors import ConfigError, MalsoriError
from malsori.llm.adapters import AdaptedLM, AdapterConfig, load_base, save_adapted
from malsori.lm.text_files import TextReadStats, excluded_sentences, iter_text_lines
from malsori.models.registry import LMConfig, build_lm
from malsori.pretrained import write_model_dir
from malsori.tasks.base import RunConfig, Task, Validation, prepare_tokenizer
from malsori.text import normalize
from malsori.tokenizer import Tokenizer

IGNORE = -100  # target id of padding: no loss, not counted


@dataclass
class TextDataConfig:
    """Where the text comes from and how it becomes token blocks."""

    train: list[str] = field(default_factory=list)  # text files (plain or .gz, one sentence or paragraph a line)
    valid: list[str] = field(default_factory=list)  # held-out text files, scored by perplexity
    holdout_every: int = bounded(0, ge=0)  # also hold out every N-th line of the training files for validation (0 = none)
    exclude: list[str] = field(default_factory=list)  # text files or .jsonl manifests: training lines that normalize to one of their sentences are left out (test transcripts)
    max_lines: int = bounded(0, ge=0)  # read at most this many lines of the training files, from the start (0 = all)
    max_valid_tokens: int = bounded(50000, ge=1)  # validate on the first whole lines of held-out text up to about this many tokens
    normalize: bool = True  # normalize lines like ASR transcripts (malsori.text.normalize), so the LM scores what recognizers write
    tokenizer: Literal["char", "bpe", "unigram"] = "char"  # units, trained on the training lines
    vocab_size: int = bounded(256, ge=1)  # SentencePiece vocabulary size (ignored for char)
    tokenizer_dir: str = ""  # use this tokenizer folder instead (e.g. an ASR model's, so the LM scores its units)
    tokenizer_lines: int = bounded(100000, ge=1)  # a new tokenizer learns from at most this many training lines (evenly spaced)
    strict: bool = True  # a line that is not UTF-8 stops the run (false: skipped and counted)
    batch_size: int = bounded(32, ge=1)  # blocks per batch and process; a block is the model's context + 1 tokens


@dataclass
class LMTrainConfig(RunConfig):
    """A language-model run (a YAML recipe with `task: lm`)."""

    task: Literal["lm"] = "lm"  # language modelling
    data: TextDataConfig = field(default_factory=TextDataConfig)  # text files and tokens
    model: LMConfig = field(default_factory=LMConfig)  # which LM and its sizes (not read with base: the base's)
    base: str = ""  # adapt this pretrained LM folder instead of training a new LM (its tokenizer and normalization)
    adapter: AdapterConfig | None = None  # with base: what is trained (full, prompt or lora); none = full fine-tuning


@dataclass
class TokenStream:
    """Lines as one token stream: eos, line 1, eos, line 2, eos, ...; every token after the first is predicted."""

    tokens: np.ndarray  # int64 token ids
    lines: int  # lines in it
    words: int  # words in it (whitespace-separated, after normalization)

    @property
    def predicted(self) -> int:
        """Tokens scored: each line's tokens and its end-of-sentence."""
        return max(0, len(self.tokens) - 1)


def encode_lines(lines: Iterable[str], tokenizer: Tokenizer, normalized: bool, max_tokens: int = 0) -> TokenStream:
    """Tokenize lines (normalized first if `normalized`) into a stream; lines empty after normalization are left
    out; with `max_tokens`, stop after the line that reaches it."""
    eos = tokenizer.special_ids.eos
    ids, n_lines, n_words = [eos], 0, 0
    for line in lines:
        text = normalize(line) if normalized else line
        if not text:
            continue
        ids += tokenizer.encode(text)
        ids.append(eos)
        n_lines += 1
        n_words += len(text.split())
        if max_tokens and len(ids) >= max_tokens:
            break
    return TokenStream(np.asarray(ids, dtype=np.int64), n_lines, n_words)


@torch.inference_mode()
def score_stream(model: torch.nn.Module, stream: TokenStream, batch_size: int = 16, device: torch.device | str = "cpu") -> float:
    """Total negative log-likelihood (nats) of the stream's predicted tokens, read in windows of the model's context
    (each window starts afresh); float64 sums."""
    c = model.context
    toks = torch.from_numpy(stream.tokens)
    n_win = math.ceil(stream.predicted / c)
    total = 0.0
    for b in range(0, n_win, batch_size):
        wins = range(b, min(n_win, b + batch_size))
        x = torch.zeros(len(wins), c, dtype=torch.long)
        y = torch.full((len(wins), c), IGNORE, dtype=torch.long)
        for r, w in enumerate(wins):
            piece = toks[w * c : w * c + c + 1]
            x[r, : len(piece) - 1], y[r, : len(piece) - 1] = piece[:-1], piece[1:]
        logits = model(x.to(device)).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(), ignore_index=IGNORE, reduction="sum").double())
    return total


def perplexity(model: torch.nn.Module, stream: TokenStream, batch_size: int = 16, device: torch.device | str = "cpu") -> Validation:
    """Perplexity per token and per word (each line's end counted as a word, as for n-gram LMs) of a stream."""
    if stream.predicted == 0:
        raise MalsoriError("no text to score")
    was_training = model.training
    model.eval()
    nll = score_stream(model, stream, batch_size, device)
    model.train(was_training)
    ppl_token = math.exp(nll / stream.predicted)
    ppl_word = math.exp(nll / (stream.words + stream.lines))
    line = (f"perplexity {ppl_token:.3f} per token, {ppl_word:.2f} per word ({stream.predicted:,} tokens, "
            f"{stream.words:,} words, {stream.lines:,} lines)")
    return Validation({"ppl_token": ppl_token, "ppl_word": ppl_word},
                      {"tokens": stream.predicted, "words": stream.words, "lines": stream.lines}, line)


class TextLMTask(Task):
    """A language model on text: random fixed-length blocks of the token stream, next-token cross-entropy."""

    name = "lm"
    config_class = LMTrainConfig
    throughput_column = "tokens_per_sec"
    valid_columns = ["ppl_token", "ppl_word", "tokens", "words", "lines"]

    def __init__(self, cfg: LMTrainConfig, out: Path, device: torch.device, rank: int = 0, world: int = 1, verbose: bool = True):
        super().__init__(cfg, out, device, rank, world, verbose)
        d = cfg.data
        if not d.train:
            raise ConfigError("data.train: no training text files given")
        if cfg.adapter is not None and not cfg.base:
            raise ConfigError("adapter: needs base (the pretrained LM folder it adapts)")
        if cfg.base and d.tokenizer_dir:
            raise ConfigError("data.tokenizer_dir: not with base (the base's tokenizer is used)")
        self.base = load_base(cfg.base) if cfg.base else None
        self.normalized = self.base.config.get("normalize", True) if self.base else d.normalize  # lines normalized
        stats = TextReadStats()
        lines = iter_text_lines(d.train, d.strict, stats)
        lines = list(itertools.islice(lines, d.max_lines) if d.max_lines else lines)
        held = [ln for k, ln in enumerate(lines) if d.holdout_every and k % d.holdout_every == d.holdout_every - 1]
        if d.holdout_every:
            lines = [ln for k, ln in enumerate(lines) if k % d.holdout_every != d.holdout_every - 1]
        texts = [normalize(ln) for ln in lines] if self.normalized else lines
        excluded = excluded_sentences(d.exclude, d.strict)
        self.excluded_lines = 0  # training lines left out by data.exclude
        if excluded:
            kept = [k for k, t in enumerate(texts) if (t if self.normalized else normalize(t)) not in excluded]
            self.excluded_lines = len(texts) - len(kept)
            texts = [texts[k] for k in kept]
        step = max(1, math.ceil(len(texts) / max(1, d.tokenizer_lines)))
        self.tokenizer = (self.base.tokenizer if self.base else
                          prepare_tokenizer(d.tokenizer, d.vocab_size, d.tokenizer_dir, texts[::step], out))
        self.train = encode_lines(texts, self.tokenizer, normalized=False)
        valid_lines = itertools.chain(iter_text_lines(d.valid, d.strict, stats), held)
        self.valid = encode_lines(valid_lines, self.tokenizer, self.normalized, d.max_valid_tokens) if d.valid or held else None
        if verbose:
            skipped = f", {len(stats.skipped):,} lines skipped (not UTF-8; first: {stats.skipped[0]})" if stats.skipped else ""
            left_out = f", {self.excluded_lines:,} left out by data.exclude" if d.exclude else ""
            tqdm.write(f"text: {self.train.lines:,} training lines, {self.train.words:,} words, {self.train.predicted:,} "
                       f"tokens; validation: {self.valid.lines if self.valid else 0:,} lines{skipped}{left_out}")
        self.context = 0  # set by build_model

    def build_model(self) -> torch.nn.Module:
        if self.base is not None:
            model = AdaptedLM(self.base.model, self.cfg.adapter or AdapterConfig(kind="full"))
        else:
            model = build_lm(self.cfg.model, self.tokenizer.vocab_size)
        self.context = model.context
        if self.train.predicted < self.context * self.cfg.data.batch_size:
            raise MalsoriError(f"{', '.join(self.cfg.data.train)}: {self.train.predicted:,} tokens are fewer than one batch "
                               f"({self.cfg.data.batch_size} blocks of {self.context})")
        return model

    def describe(self, model: torch.nn.Module) -> str:
        if isinstance(model, AdaptedLM):
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            return f"{model.cfg.kind} adapter of {self.base.path}, {trainable:,} trainable, context {self.context}"
        return f"{self.cfg.model.kind}, context {self.context}, vocab {self.tokenizer.vocab_size}"

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of block start offsets: the stream is cut at an offset drawn per epoch, the blocks
        shuffled, all a function of (seed, epoch)."""
        c, bs = self.context, self.cfg.data.batch_size
        rng = np.random.default_rng([self.cfg.seed, epoch])
        offset = int(rng.integers(c))
        count = (len(self.train.tokens) - 1 - offset) // c
        starts = offset + c * rng.permutation(count)
        batches = [starts[i : i + bs] for i in range(0, count - bs + 1, bs)]
        n = len(batches) // self.world * self.world  # equal counts per rank so collective ops stay in step
        return batches[self.rank : n : self.world]

    def batches(self, epoch: int, skip: int) -> tuple[Iterator[torch.Tensor], int]:
        all_batches = self._epoch_batches(epoch)
        toks, span = self.train.tokens, self.context + 1
        gen = (torch.from_numpy(np.stack([toks[s : s + span] for s in b])) for b in all_batches[skip:])
        return gen, len(all_batches)

    def prepare(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = batch.to(self.device)
        return batch[:, :-1], batch[:, 1:]

    def loss(self, model: torch.nn.Module, prepared: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, y = prepared
        logits = model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()), {"tokens": y.numel()}

    def amount(self, batch: torch.Tensor) -> float:
        return float(batch.shape[0] * (batch.shape[1] - 1))

    def validate(self, model: torch.nn.Module) -> Validation | None:
        if self.valid is None:
            return None
        return perplexity(model, self.valid, self.cfg.data.batch_size, self.device)

    def save_model(self, path: Path, model: torch.nn.Module) -> Path:
        if self.base is not None:
            return save_adapted(path, model, self.base)
        return write_model_dir(path, "lm", model, {"model": to_dict(self.cfg.model), "normalize": self.cfg.data.normalize},
                               self.tokenizer)
