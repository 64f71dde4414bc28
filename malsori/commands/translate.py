"""`malsori translate MODEL "text" ...` (or --input FILE, or standard input) and the translation branch of
`malsori eval MODEL TEST.tsv` (multi-reference BLEU with its signature, chrF)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from malsori.commands.options import DEVICE, field_type
from malsori.decode.options import DecodeOptions
from malsori.errors import MalsoriError


def _hangul_or_cjk(texts: list[str]) -> bool:
    """True when most letters are Hangul or CJK ideographs/kana: then BLEU is scored on characters."""
    letters = [c for t in texts for c in t if c.isalpha()]
    far_east = sum(1 for c in letters if "\u1100" <= c <= "\u11ff" or "\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af")
    return bool(letters) and far_east > len(letters) / 2


def evaluate_mt(model: Path, test: Path, options: DecodeOptions, batch_size: int, device: str, report: Path | None,
                limit: int, strict: bool) -> str:
    """Translate every distinct source of the parallel file TEST (its repeated sources' translations are the
    references) and score BLEU and chrF; a per-sentence report goes next to the model. Returns the summary."""
    from malsori.mt.data import ParallelReadStats, group_references, read_parallel
    from malsori.mt.translate import TextTranslator, evaluate_translations, write_report

    stats = ParallelReadStats()
    multi = group_references(read_parallel(test, strict, stats))
    multi = multi[:limit] if limit else multi
    if not multi:
        raise MalsoriError(f"{test}: no pairs to score")
    translator = TextTranslator.load(model, device)
    char_level = _hangul_or_cjk([r for m in multi for r in m.references])
    result = evaluate_translations(translator, multi, options, batch_size, char_level)
    path = report or Path(model).parent / f"eval_{test.name.split('.')[0]}_{options.method}.tsv"
    write_report(path, multi, result)
    skipped = f"; {len(stats.skipped)} malformed lines skipped (first: {stats.skipped[0]})" if stats.skipped else ""
    return f"{result.summary()}\nreport: {path}{skipped}"


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Translate this file, one sentence a line (default: the TEXT arguments, else standard input).")
@click.option("--method", type=click.Choice(["greedy", "beam"]), default="beam", show_default=True, help="Search.")
@click.option("--beam", "beam_size", type=field_type(DecodeOptions, "beam_size"), default=5, show_default=True, help="Beam width.")
@click.option("--nbest", type=field_type(DecodeOptions, "nbest"), default=1, show_default=True,
              help="Print this many translations per sentence, best first, tab-separated (beam).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Sentences decoded together.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--asr", "asr_model", type=click.Path(path_type=Path), default=None,
              help="Speech translation by cascade: the arguments are audio files, transcribed by this speech model "
                   "(e.g. en-small, beam 8), then translated; prints file, transcript and translation.")
@click.option("--json", "as_json", is_flag=True, help="With --asr: one JSON object per file (transcript, its word timestamps, translation).")
def translate(model, texts, input_file, method, beam_size, nbest, batch_size, device, asr_model, as_json) -> None:
    """Translate TEXT arguments, the lines of --input, or standard input with the translation model MODEL; one line
    out per line in (an empty line stays empty). With --asr ASR_MODEL the arguments are audio files."""
    from malsori.mt.translate import TextTranslator

    if texts and input_file:
        raise MalsoriError("give TEXT arguments or --input, not both")
    if nbest > 1 and method != "beam":
        raise MalsoriError("--nbest: needs --method beam")
    if as_json and asr_model is None:
        raise MalsoriError("--json: needs --asr")
    if asr_model is not None:
        if not texts:
            raise MalsoriError("--asr: give audio files as arguments")
        _cascade(model, asr_model, texts, DecodeOptions(method=method, beam_size=beam_size), batch_size, device, as_json)
        return
    if texts:
        lines = list(texts)
    elif input_file:
        try:
            lines = input_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise MalsoriError(f"{input_file}: not UTF-8 text (byte {e.start})") from None
    else:
        lines = sys.stdin.read().splitlines()
    translator = TextTranslator.load(model, device)
    options = DecodeOptions(method=method, beam_size=beam_size, nbest=nbest)
    for t in translator.translate(lines, options, batch_size):
        click.echo("\t".join(t.nbest[:nbest]) if nbest > 1 else t.text)


def _cascade(model: Path, asr_model: Path, files: tuple[str, ...], options: DecodeOptions, batch_size: int, device: str,
             as_json: bool) -> None:
    """English speech → transcript (with word times) → translation, file by file; an unreadable file is named on
    stderr and the exit status is 2."""
    import malsori
    from malsori.errors import AudioError
    from malsori.files import strict_json
    from malsori.mt.translate import TextTranslator

    rec = malsori.load(asr_model, device)
    translator = TextTranslator.load(model, device)
    failed = 0
    for t in rec.transcribe_each(list(files), DecodeOptions(method="beam", beam_size=8), batch_size=batch_size):
        if isinstance(t, AudioError):
            failed += 1
            click.echo(f"error: {t}", err=True)
            continue
        out = translator.translate(t.text, options).text if t.text else ""
        if as_json:
            click.echo(strict_json({**t.to_json(), "translation": out}, t.id))
        else:
            click.echo(f"{t.id}\t{t.text}\t{out}")
    if failed:
        sys.exit(2)
