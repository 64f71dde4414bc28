"""`malsori eval MODEL MANIFEST` and `malsori transcribe MODEL FILE...`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from malsori.commands.options import DEVICE, Bounded, field_type
from malsori.config import Range
from malsori.decode.options import DecodeOptions
from malsori.errors import MalsoriError

method_option = click.option("--method", default="greedy", show_default=True,
                             help="Search: greedy | beam (every model); ctc_greedy | ctc_beam | rescore (attention models with CTC); "
                                  "modified_beam (transducers).")
beam_option = click.option("--beam", "beam_size", type=field_type(DecodeOptions, "beam_size"), default=8, show_default=True, help="Beam width for --method beam.")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Utterances decoded together.")
device_option = click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")


def lm_options(command):
    """--lm, --lm-weight, --word-bonus, --no-lm-lookahead, --unk-logprob, --lm-rescore: a word n-gram LM in the search;
    --hotwords, --hotwords-score: contextual biasing."""
    options = [
        click.option("--lm", "lm_path", type=click.Path(path_type=Path), default=None,
                     help="LM fused into the search (shallow fusion): a word n-gram LM file (ARPA, plain or .gz, e.g. "
                          "from `malsori lm train-ngram`; scored at word ends) or a GPT model folder trained in the "
                          "model's own units (`malsori train` with data.tokenizer_dir = the model; scored per token)."),
        click.option("--lm-weight", type=Bounded(Range(ge=0), float), default=0.5, show_default=True, help="λ: weight of the LM's log-probability."),
        click.option("--word-bonus", type=Bounded(Range(), float), default=0.0, show_default=True, help="β: added per completed word."),
        click.option("--no-lm-lookahead", is_flag=True,
                     help="Score a word only when it is complete (default: partial words pay their best completion)."),
        click.option("--unk-logprob", type=Bounded(Range(le=0), float), default=None,
                     help="Natural-log score of a word the LM does not know (default: the LM's <unk> probability)."),
        click.option("--lm-rescore", is_flag=True,
                     help="Re-rank the beam's n-best with the LM after the search instead of fusing it."),
        click.option("--ilm-weight", type=field_type(DecodeOptions, "ilm_weight"), default=0.0, show_default=True,
                     help="μ: subtract μ × the model's internal LM estimate (transducer and attention models; ILME)."),
        click.option("--hotwords", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Phrases to favour, one a line, optionally ending in ' :BOOST' (sherpa-onnx's format)."),
        click.option("--hotwords-score", type=Bounded(Range(), float), default=1.5, show_default=True,
                     help="Boost per token of a hotword phrase without its own ' :BOOST'."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def decode_options(model: Path, method: str, beam_size: int, lm_path: Path | None, lm_weight: float, word_bonus: float,
                   no_lm_lookahead: bool, unk_logprob: float | None, lm_rescore: bool, hotwords: Path | None,
                   hotwords_score: float, ilm_weight: float = 0.0, device: str = "cpu"):
    """The `DecodeOptions` of the command line: the LM's scorers (an ARPA file or a GPT folder, built for MODEL's
    tokenizer; a GPT on `device`), fused or rescoring, the internal LM weight, and the hotwords' scorer (fused)."""

    if lm_path is None:
        for name, value, default in (("--lm-weight", lm_weight, 0.5), ("--word-bonus", word_bonus, 0.0),
                                     ("--no-lm-lookahead", no_lm_lookahead, False), ("--unk-logprob", unk_logprob, None),
                                     ("--lm-rescore", lm_rescore, False)):
            if value != default:
                raise MalsoriError(f"{name}: needs --lm")
    if hotwords is None and hotwords_score != 1.5:
        raise MalsoriError("--hotwords-score: needs --hotwords")
    if lm_path is None and hotwords is None:
        return DecodeOptions(method=method, beam_size=beam_size, ilm_weight=ilm_weight)
    from malsori.decode.hotwords import HotwordScorer
    from malsori.decode.scorers import WeightedScorer
    from malsori.lm_scorers import lm_scorers
    from malsori.pretrained import resolve_model
    from malsori.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model(model))
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = () if lm_path is None else lm_scorers(lm_path, tokenizer, lm_weight, word_bonus, not no_lm_lookahead,
                                               unk_logprob, device)
    bias = () if hotwords is None else (
        WeightedScorer("hotwords", HotwordScorer.from_file(hotwords, tokenizer, hotwords_score), 1.0),)
    if lm_rescore:
        return DecodeOptions(method=method, beam_size=beam_size, scorers=bias, rescorers=lm, ilm_weight=ilm_weight)
    return DecodeOptions(method=method, beam_size=beam_size, scorers=lm + bias, ilm_weight=ilm_weight)


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
@lm_options
def evaluate(model, manifest, method, beam_size, batch_size, device, report, limit, strict, **lm) -> None:
    """Print WER and CER of MODEL on MANIFEST and write a per-utterance report sorted worst first."""
    from malsori.evaluate import evaluate_manifest
    from malsori.pretrained import bound_heap

    bound_heap()
    res = evaluate_manifest(model, manifest, decode_options(model, method, beam_size, device=device, **lm), batch_size=batch_size,
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
@lm_options
def transcribe(model, files, method, beam_size, batch_size, device, as_json, **lm) -> None:
    """Transcribe audio FILES (wav/flac/ogg/mp3, any rate) with MODEL; long files are read in blocks and cut into
    segments (memory does not grow with their length). An unreadable file is named on stderr, the others are still
    transcribed, and the exit status is then 2."""
    import malsori
    from malsori.errors import AudioError
    from malsori.files import strict_json
    from malsori.pretrained import bound_heap

    bound_heap()
    options = decode_options(model, method, beam_size, device=device, **lm)
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
