"""`malsori eval MODEL MANIFEST` and `malsori transcribe MODEL FILE...`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

method_option = click.option("--method", default="greedy", show_default=True,
                             help="Search: greedy | beam (every model); ctc_greedy | ctc_beam | rescore (attention models with CTC); "
                                  "modified_beam (transducers).")
beam_option = click.option("--beam", "beam_size", type=int, default=8, show_default=True, help="Beam width for --method beam.")
batch_option = click.option("--batch-size", type=int, default=16, show_default=True, help="Utterances decoded together.")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


@click.command(name="eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(path_type=Path))
@method_option
@beam_option
@batch_option
@device_option
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Per-utterance report (TSV, worst first). Default: MODEL/../eval_<manifest>_<method>.tsv")
@click.option("--limit", type=int, default=0, help="Score only the first N utterances (0 = all).")
@click.option("--strict", is_flag=True, help="Malformed manifest lines and unreadable audio are errors, not counted skips.")
def evaluate(model, manifest, method, beam_size, batch_size, device, report, limit, strict) -> None:
    """Print WER and CER of MODEL on MANIFEST and write a per-utterance report sorted worst first."""
    from malsori.decode.options import DecodeOptions
    from malsori.evaluate import evaluate_manifest
    from malsori.pretrained import bound_heap

    bound_heap()
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
    """Transcribe audio FILES (wav/flac/ogg/mp3, any rate) with MODEL; long files are read in blocks and cut into
    segments (memory does not grow with their length). An unreadable file is named on stderr, the others are still
    transcribed, and the exit status is then 2."""
    import malsori
    from malsori.decode.options import DecodeOptions
    from malsori.errors import AudioError
    from malsori.files import strict_json
    from malsori.pretrained import bound_heap

    bound_heap()
    options = DecodeOptions(method=method, beam_size=beam_size)
    rec = malsori.load(model, device)
    failed, t0 = 0, time.time()
    for t in rec.transcribe_each([str(f) for f in files], options, batch_size=batch_size):
        if isinstance(t, AudioError):
            failed += 1
            click.echo(f"error: {t}", err=True)
        elif as_json:
            rtf = round((time.time() - t0) / max(t.duration, 1e-9), 4)  # time since the previous result, per second of audio
            click.echo(strict_json({**t.to_json(), "rtf": rtf}, t.id))
        else:
            click.echo(f"{t.id}\t{t.text}")
        t0 = time.time()
    if failed:
        if len(files) > 1:
            click.echo(f"{failed} of {len(files)} files could not be transcribed", err=True)
        sys.exit(2)
