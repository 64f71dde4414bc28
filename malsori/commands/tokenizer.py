"""`malsori tokenizer train`: train a character or SentencePiece tokenizer on manifest transcripts and text files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import click

from malsori.data.manifest import read_manifest
from malsori.errors import MalsoriError
from malsori.tokenizer import KINDS, train_tokenizer


@click.group(name="tokenizer")
def tokenizer() -> None:
    """Train tokenizers (ids 0-2 are <blank>, <unk>, <sos/eos>)."""


def _texts(manifests: tuple[Path, ...], text_files: tuple[Path, ...]) -> Iterator[str]:
    """Normalized transcripts of every manifest, then every line of every text file."""
    from malsori.text import normalize  # imported here: the normalizer is the one used by training and scoring

    for m in manifests:
        for u in read_manifest(m):
            yield normalize(u.text)
    for f in text_files:
        try:
            with open(f, encoding="utf-8") as lines:
                yield from (normalize(line) for line in lines)
        except UnicodeDecodeError as e:
            raise MalsoriError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None


@tokenizer.command()
@click.option("--kind", type=click.Choice(KINDS), required=True, help="char, or SentencePiece bpe / unigram.")
@click.option("--vocab-size", type=click.IntRange(min=1), default=None,
              help="Number of ids, the 3 reserved ones included. Required for bpe/unigram; char keeps all if absent.")
@click.option("--manifest", "manifests", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Manifest whose transcripts to train on (repeatable).")
@click.option("--text", "text_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Plain text file, one sentence a line (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write tokenizer.json (and tokenizer.model) into.")
def train(kind: str, vocab_size: int | None, manifests: tuple[Path, ...], text_files: tuple[Path, ...],
          out: Path) -> None:
    """Train a tokenizer on normalized text (malsori.text.normalize) from manifests and text files."""
    if not manifests and not text_files:
        raise click.UsageError("give at least one --manifest or --text")
    tok = train_tokenizer(kind, _texts(manifests, text_files), vocab_size, out)
    sample = [tok.id_to_piece(i) for i in range(3, min(tok.vocab_size, 13))]
    click.echo(f"{out}: {kind} tokenizer, {tok.vocab_size} ids (first pieces: {' '.join(sample)})")
