"""`malsori tune-lm MODEL DEV_MANIFEST --lm LM`: choose λ, β (and μ) for LM fusion on a dev set, never a test set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from malsori.commands.recognize import batch_option, beam_option, device_option
from malsori.errors import MalsoriError


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise MalsoriError(f"{name}: a comma-separated list of numbers, got {text!r}") from None


@click.command(name="tune-lm")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--lm", "lm_path", type=click.Path(path_type=Path), required=True, help="ARPA file or GPT model folder (as for `eval --lm`).")
@click.option("--lm-weights", default="0.1,0.25,0.5,0.75,1.0", show_default=True, help="λ values to try.")
@click.option("--word-bonuses", default="0,1,2,3", show_default=True, help="β values to try.")
@click.option("--ilm-weights", default="0", show_default=True, help="μ values to try (transducer and attention models).")
@click.option("--lm-rescore", is_flag=True, help="Tune n-best rescoring with the LM instead of fusion.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Passes of the coordinate search at most.")
@click.option("--method", default="beam", show_default=True, help="A search that takes an LM (as for `eval --method`).")
@beam_option
@batch_option
@device_option
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Use only the first N utterances (0 = all).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("lm_weights.json"), show_default=True,
              help="JSON file for the chosen weights, every point tried, and the eval command that uses them.")
def tune_lm(model, manifest, lm_path, lm_weights, word_bonuses, ilm_weights, lm_rescore, rounds, method, beam_size, batch_size,
            device, limit, out) -> None:
    """Choose the LM weight λ, the word bonus β (and the internal LM weight μ) on a DEV manifest by a coordinate
    search over small grids (lowest WER, then CER), decoding the dev set once per point. A manifest whose name or
    folder says "test" is refused."""
    from malsori.data.manifest import read_manifest
    from malsori.data.select import load_waves
    from malsori.evaluate import check_writable
    from malsori.lm_scorers import load_lm
    from malsori.pretrained import Recognizer, bound_heap
    from malsori.tune_lm import TuneGrid, check_dev_set, tune_weights

    check_dev_set(manifest)
    grid = TuneGrid(_floats(lm_weights, "--lm-weights"), _floats(word_bonuses, "--word-bonuses"),
                    _floats(ilm_weights, "--ilm-weights"), rounds)
    check_writable(out, "weights")
    bound_heap()
    rec = Recognizer.load(model, device)
    lm = load_lm(lm_path, rec.tokenizer, rec.device)
    utts = read_manifest(manifest).utterances
    utts, waves, errors = load_waves(utts[:limit] if limit else utts)
    if not utts:
        raise MalsoriError(f"{manifest}: no readable utterances")
    show = lambda r: click.echo(f"λ {r.lm_weight:g}  β {r.word_bonus:g}  μ {r.ilm_weight:g}:  WER {100 * r.wer:.2f}%  "  # noqa: E731
                                f"CER {100 * r.cer:.2f}%  RTF {r.rtf:.3f}")
    result = tune_weights(rec, utts, waves, lm, grid, method, beam_size, batch_size, lm_rescore, log=show)
    b = result.best
    command = (f"malsori eval {model} TEST_MANIFEST --method {method} --beam {beam_size} --lm {lm_path} "
               f"--lm-weight {b.lm_weight:g} --word-bonus {b.word_bonus:g}" + (f" --ilm-weight {b.ilm_weight:g}" if b.ilm_weight else "")
               + (" --lm-rescore" if lm_rescore else ""))
    record = {"model": str(model), "dev": str(manifest), "utterances": len(utts), "unreadable": len(errors),
              "lm": str(lm_path), "rescore": lm_rescore, "method": method, "beam": beam_size, "lm_weight": b.lm_weight, "word_bonus": b.word_bonus,
              "ilm_weight": b.ilm_weight, "wer": b.wer, "cer": b.cer, "no_lm": vars(result.no_lm),
              "rows": [vars(r) for r in result.rows], "command": command}
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    click.echo(f"chosen: λ {b.lm_weight:g}, β {b.word_bonus:g}, μ {b.ilm_weight:g} (dev WER {100 * b.wer:.2f}%, "
               f"no LM {100 * result.no_lm.wer:.2f}%) → {out}\n{command}")
