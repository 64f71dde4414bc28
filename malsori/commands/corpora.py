"""`malsori data import`: turn a corpus in another layout into a malsori manifest."""

from __future__ import annotations

from pathlib import Path

import click

from malsori.data.corpora import FORMATS, import_corpus


@click.command(name="import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice([*FORMATS, "auto"]))
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--split", default=None, help="Common Voice: which TSV to read (train, dev, test, validated …). Default: train.")
@click.option("--audio-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Kaldi: folder that relative wav.scp paths start from. Default: the data directory.")
@click.option("--strict", is_flag=True, help="Stop at the first bad item instead of skipping it.")
@click.option("--absolute-paths", is_flag=True, help="Write absolute audio paths instead of paths relative to OUT.")
def import_(fmt: str, src: Path, out: Path, split: str | None, audio_root: Path | None, strict: bool,
            absolute_paths: bool) -> None:
    """Import corpus SRC in layout FORMAT and write the manifest OUT (a folder gets OUT/manifest.jsonl).

    \b
    FORMAT is one of:
      librispeech  <speaker>/<chapter>/<speaker>-<chapter>.trans.txt beside <utt-id>.flac files
      commonvoice  <split>.tsv (client_id, path, sentence, …) and clips/<path>
      kaldi        a data directory: wav.scp, text, optional segments and utt2spk (no shell pipes)
      jsonl        another manifest (paths are rewritten for OUT's folder)
      auto         guess from the files in SRC

    Durations are read from audio headers. Missing, empty or corrupt audio and malformed lines are skipped and
    counted (--strict stops instead). Kaldi segments become `offset` + `duration` fields.
    """
    report = import_corpus(fmt, src, out, strict=strict, absolute_paths=absolute_paths, split=split,
                           audio_root=audio_root)
    click.echo(report.summary())
    for item, reason in report.skipped[:20]:
        click.echo(f"  skipped {item}: {reason}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"  … and {len(report.skipped) - 20} more", err=True)
