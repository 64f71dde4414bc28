"""`malsori eval MODEL MANIFEST` and `malsori transcribe MODEL FILE...`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from malsori.commands.options import DEVICE, field_type
from malsori.decode.options import DecodeOptions

method_option = click.option("--method", default="greedy", show_default=True,
                             help="Search: greedy | beam (every model); ctc_greedy | ctc_beam | rescore (attention models with CTC); "
                                  "modified_beam (transducers).")
beam_option = click.option("--beam", "beam_size", type=field_type(DecodeOptions, "beam_size"), default=8, show_default=True, help="Beam width for --method beam.")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Utterances decoded together.")
device_option = click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


@click.command(name="eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(path_type=Path))
@method_option
@beam_option
@batch_option
@device_option
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Per-utterance report (TSV, worst first). Default: MODEL/../eval_<manifest>_<method>.tsv")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Score only the first N utterances (0 = all).")
@click.option("--strict", is_flag=True, help="Malformed manifest lines and unreadable audio are errors, not counted skips.")
def evaluate(model, manifest, method, beam_size, batch_size, device, report, limit, strict) -> None:
    """Print WER and CER of MODEL on MANIFEST and write a per-utterance report sorted worst first."""
    from malsori.evaluate import evaluate_manifest

    res = evaluate_manifest(model, manifest, DecodeOptions(method=method, beam_size=beam_size), batch_size=batch_size,
                            device=device, report=report, limit=limit, strict=strict)
    click.echo(res.summary())


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@method_option
@beam_option
@batch_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file: text, score, duration, word timestamps.")
def transcribe(model, files, method, beam_size, batch_size, device, as_json) -> None:
    """Transcribe audio FILES (wav/flac/ogg/mp3, any rate) with MODEL; long files are cut into segments."""
    import malsori

    options = DecodeOptions(method=method, beam_size=beam_size)
    rec = malsori.load(model, device)
    chunk = batch_size
    for i in range(0, len(files), chunk):  # bounded memory: a chunk of files at a time
        t0 = time.time()
        for t in rec.transcribe([str(f) for f in files[i : i + chunk]], options, batch_size=batch_size):
            if as_json:
                click.echo(json.dumps({**t.to_json(), "rtf": round((time.time() - t0) / max(t.duration, 1e-9), 4)}, ensure_ascii=False))
            else:
                click.echo(f"{t.id}\t{t.text}")
