"""`malsori lm`: word n-gram LMs, trained to ARPA files (interpolated modified Kneser–Ney) and evaluated; neural LMs
(trained by `malsori train` with a `task: lm` recipe) evaluated and sampled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import click

from malsori.commands.options import field_type
from malsori.errors import MalsoriError
from malsori.lm.generate import SamplingOptions
from malsori.files import strict_json

_TEXT = click.Path(path_type=Path)


@click.group(name="lm")
def lm() -> None:
    """Language models: word n-gram LMs in ARPA files, neural LMs (GPT) in model folders."""


@lm.command("train-ngram")
@click.argument("texts", nargs=-1, required=True, type=_TEXT)
@click.option("--order", type=int, default=3, show_default=True, help="n of the longest n-grams (3 or 4 are usual).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="ARPA file to write (gzip when it ends in .gz).")
@click.option("--prune-count", type=int, default=None,
              help="Drop n-grams of order ≥ 2 seen fewer than N times (backoff weights recomputed).")
@click.option("--max-ngrams", type=int, default=None,
              help="Then keep at most N n-grams of all orders, dropping the least useful first (Stolcke).")
@click.option("--exclude", "excludes", multiple=True, type=_TEXT,
              help="Text file or .jsonl manifest whose sentences are left out of training when a training line "
                   "normalizes to one of them, e.g. test transcripts (repeatable).")
@click.option("--skip-bad-lines", is_flag=True, help="Skip and count lines that are not UTF-8 instead of stopping.")
@click.option("--digits", type=int, default=None,
              help="Significant digits of the numbers in the ARPA file (default: exact, reads back bit for bit).")
def train_ngram(texts: tuple[Path, ...], order: int, out: Path, prune_count: int | None, max_ngrams: int | None,
                excludes: tuple[Path, ...], skip_bad_lines: bool, digits: int | None) -> None:
    """Train a word n-gram LM on text files (plain or .gz, one sentence or paragraph a line; normalized like
    ASR transcripts) with interpolated modified Kneser–Ney smoothing, and write it as ARPA."""
    from malsori.lm.kneser_ney import KneserNeyConfig
    from malsori.lm.ngram import NgramLM
    from malsori.lm.text_files import TextReadStats, excluded_sentences, iter_text_lines
    from malsori.text import normalize

    for name, value in (("--order", order), ("--prune-count", prune_count), ("--max-ngrams", max_ngrams),
                        ("--digits", digits)):
        if value is not None and value < 1:
            raise MalsoriError(f"{name} must be at least 1, got {value}")
    start = time.perf_counter()
    exclude = excluded_sentences(excludes, not skip_bad_lines)
    stats = TextReadStats()
    dropped = 0
    words = 0

    def sentences() -> Iterator[list[str]]:
        nonlocal dropped, words
        for line in iter_text_lines(texts, not skip_bad_lines, stats):
            text = normalize(line)
            if text in exclude:
                dropped += 1
                continue
            ws = text.split()
            words += len(ws)
            yield ws

    model = NgramLM.train(sentences(), order)
    trained = time.perf_counter()
    if prune_count is not None or max_ngrams is not None:
        model = model.prune(min_count=prune_count, max_ngrams=max_ngrams)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.write_arpa(out, digits)
    done = time.perf_counter()
    counts = " / ".join(f"{n:,}" for n in model.num_ngrams)
    click.echo(f"{out}: {model.order}-gram LM, {counts} n-grams, vocabulary {len(model.vocab):,}; "
               f"{stats.lines:,} lines, {words:,} words; {out.stat().st_size / 1e6:.1f} MB")
    click.echo(f"trained in {trained - start:.1f} s (reading and normalizing included), "
               f"pruned and written in {done - trained:.1f} s")
    if model.discounts:
        fallback = KneserNeyConfig().discount_fallback  # used where count-of-counts give no valid discounts
        per_order = "; ".join(" ".join(f"{d:.3f}" for d in ds) + (" (fallback)" if tuple(ds) == fallback else "")
                              for ds in model.discounts)
        click.echo(f"discounts D1 D2 D3+ per order: {per_order}")
    if excludes:
        click.echo(f"{dropped:,} training lines left out: they equal one of the {len(exclude):,} --exclude sentences")
    if stats.skipped:
        click.echo(f"skipped {len(stats.skipped):,} lines that are not UTF-8, first: {stats.skipped[0]}")


@lm.command("eval-ngram")
@click.argument("arpa", type=_TEXT)
@click.argument("texts", nargs=-1, required=True, type=_TEXT)
@click.option("--skip-bad-lines", is_flag=True, help="Skip and count lines that are not UTF-8 instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text file (and the total) instead.")
def eval_ngram(arpa: Path, texts: tuple[Path, ...], skip_bad_lines: bool, as_json: bool) -> None:
    """Perplexity per word (</s> counted as a word) and OOV rate of an ARPA LM on text files, normalized like
    ASR transcripts. OOVs are scored as <unk>; the perplexity without them is printed too (SRILM's ppl)."""
    from malsori.lm.ngram import NgramLM, Perplexity
    from malsori.lm.text_files import iter_text_lines

    for path in texts:
        if not path.is_file():
            raise MalsoriError(f"{path}: text file not found")
    model = NgramLM.read_arpa(arpa)
    total = Perplexity()
    rows = []
    for path in texts:
        r = model.perplexity(iter_text_lines([path], not skip_bad_lines))
        if r.sentences == 0:
            raise MalsoriError(f"{path}: no words to score")
        total.add(r)
        rows.append((str(path), r))
    if len(texts) > 1:
        rows.append(("total", total))
    for name, r in rows:
        if as_json:
            click.echo(strict_json({"text": name, "sentences": r.sentences, "words": r.words, "oovs": r.oovs,
                                    "oov_rate": r.oov_rate, "ppl": r.ppl, "ppl_without_oovs": r.ppl_known,
                                    "log10_prob": r.log10_prob}, name))
        else:
            click.echo(f"{name}: {r.sentences:,} sentences, {r.words:,} words, OOV {100 * r.oov_rate:.2f}% "
                       f"({r.oovs:,}); perplexity {r.ppl:.2f} (OOVs as <unk>), {r.ppl_known:.2f} without OOVs")


def _load_lm(model: str):
    from malsori.llm.adapters import load_lm

    return load_lm(model)  # an LM folder, or an adapter folder on its base


@lm.command("eval")
@click.argument("model")
@click.argument("texts", nargs=-1, required=True, type=_TEXT)
@click.option("--skip-bad-lines", is_flag=True, help="Skip and count lines that are not UTF-8 instead of stopping.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Windows of the model's context scored at once.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text file instead.")
def eval_lm(model: str, texts: tuple[Path, ...], skip_bad_lines: bool, batch_size: int, as_json: bool) -> None:
    """Perplexity per token and per word (each line's end counted as a word) of a neural LM model folder on text
    files (plain or .gz, one sentence or paragraph a line), normalized as the model's training text was."""
    from malsori.lm.text_files import iter_text_lines
    from malsori.tasks.lm import encode_lines, perplexity

    m = _load_lm(model)
    for path in texts:
        stream = encode_lines(iter_text_lines([path], not skip_bad_lines), m.tokenizer, m.config.get("normalize", True))
        if stream.lines == 0:
            raise MalsoriError(f"{path}: no text to score")
        start = time.perf_counter()
        r = perplexity(m.model, stream, batch_size)
        if as_json:
            click.echo(strict_json({"text": str(path), **r.counts, **r.metrics, "seconds": round(time.perf_counter() - start, 2)}, str(path)))
        else:
            click.echo(f"{path}: {r.line}")


@lm.command("generate")
@click.argument("model")
@click.option("--prompt", default="", help="Text the sample continues (normalized as the training text was).")
@click.option("--temperature", type=field_type(SamplingOptions, "temperature"), default=1.0, show_default=True, help="0 = always the most likely token.")
@click.option("--top-k", type=field_type(SamplingOptions, "top_k"), default=0, show_default=True, help="Draw among the k most likely tokens (0 = all).")
@click.option("--top-p", type=field_type(SamplingOptions, "top_p"), default=1.0, show_default=True, help="Draw among the most likely tokens of total probability p.")
@click.option("--seed", type=field_type(SamplingOptions, "seed"), default=0, show_default=True, help="Seeds the draws.")
@click.option("--max-tokens", type=field_type(SamplingOptions, "max_tokens"), default=200, show_default=True, help="Stop after this many tokens (or at the sentence's end).")
@click.option("--num", type=click.IntRange(min=1), default=1, show_default=True, help="Samples to draw (seeds seed, seed+1, ...).")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A prompt of several lines (e.g. few-shot examples, `malsori llm prompt`), each ended by the "
                   "end-of-sentence token as in training, the last continued; instead of --prompt.")
def generate_cmd(model: str, prompt: str, temperature: float, top_k: int, top_p: float, seed: int, max_tokens: int, num: int,
                 prompt_file: Path | None) -> None:
    """Sample sentences from a neural LM model folder (or an adapter folder), each continuing --prompt, one a line."""
    from malsori.lm.generate import generate
    from malsori.lm.text_files import iter_text_lines
    from malsori.llm.prompts import encode_prompt
    from malsori.text import normalize

    m = _load_lm(model)
    lines = list(iter_text_lines([prompt_file])) if prompt_file is not None else [prompt]
    lines = [normalize(ln) if m.config.get("normalize", True) else ln.strip() for ln in lines]
    eos = m.tokenizer.special_ids.eos
    start = encode_prompt(lines, m.tokenizer) if any(lines) else [eos]
    for k in range(num):
        opts = SamplingOptions(temperature, top_k, top_p, max_tokens, seed + k)
        new = generate(m.model, start, eos, opts)
        last = len(start) - start[::-1].index(eos)  # the prompt's last line (its only one with --prompt)
        click.echo(m.tokenizer.decode(start[last:] + new))
