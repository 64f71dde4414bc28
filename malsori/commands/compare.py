"""`malsori compare`: train every model family on one corpus with one budget, and write a report with plots."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from malsori.commands.options import DEVICE, field_type
from malsori.compare import DEFAULT_REAL, FAMILIES, CompareConfig


@click.command()
@click.option("--corpus", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder with train.jsonl, dev.jsonl, test.jsonl; synthesized there first if it has none.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Report folder: compare.md, results.json, PNG plots, runs/<family>/, long_test/.")
@click.option("--minutes", type=field_type(CompareConfig, "minutes"), default=20.0, show_default=True, help="Wall-clock training minutes per family.")
@click.option("--families", default=",".join(FAMILIES), show_default=True,
              help="Comma-separated names in recipes/compare/ or recipe paths.")
@click.option("--threads", type=field_type(CompareConfig, "threads"), default=2, show_default=True, help="CPU threads for training and decoding.")
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--beam-size", type=field_type(CompareConfig, "beam_size"), default=8, show_default=True, help="Beam width of the beam-search measurements.")
@click.option("--test-limit", type=field_type(CompareConfig, "test_limit"), default=0, show_default=True, help="Evenly spaced test utterances to score (0 = all).")
@click.option("--long-max-concat", type=field_type(CompareConfig, "long_max_concat"), default=6, show_default=True, help="Long set: join up to this many test utterances.")
@click.option("--long-per-count", type=field_type(CompareConfig, "long_per_count"), default=24, show_default=True, help="Long set: utterances per number joined.")
@click.option("--long-min-bucket", type=field_type(CompareConfig, "long_min_bucket"), default=5, show_default=True,
              help="Long set: widen duration buckets until each holds this many utterances.")
@click.option("--long-beam", is_flag=True, help="Also beam-search the long set (slow).")
@click.option("--real-manifest", default=str(DEFAULT_REAL), show_default=True, help="Real-speech manifest (skipped if absent).")
@click.option("--real-limit", type=field_type(CompareConfig, "real_limit"), default=200, show_default=True, help="Evenly spaced real-speech utterances (0 = skip).")
@click.option("--num-train", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Train utterances when the corpus has to be synthesized (dev and test get a tenth each).")
@click.option("--seed", type=field_type(CompareConfig, "seed"), default=0, show_default=True, help="Seed of training, corpus synthesis and the long set.")
@click.option("--retrain", is_flag=True, help="Retrain families whose model folder exists (default: reuse them).")
@click.option("-o", "--override", "overrides", multiple=True,
              help="key=value applied to every recipe, e.g. -o max_steps=50 -o model.conformer.num_layers=2; repeatable.")
def compare(corpus, out, minutes, families, threads, device, beam_size, test_limit, long_max_concat, long_per_count,
            long_min_bucket, long_beam, real_manifest, real_limit, num_train, seed, retrain, overrides) -> None:
    """Train each model family for the same wall-clock budget, one after another, then compare accuracy (greedy and beam),
    error rate against utterance length, training and decoding speed, and real-speech accuracy in OUT/compare.md.

    Re-running reuses finished families (and their cached scores), so an interrupted comparison picks up where it stopped.
    """
    from malsori.compare import run_compare, synthesize_missing_corpus

    if not (corpus / "train.jsonl").is_file():
        click.echo(f"{corpus}: no corpus yet, synthesizing {num_train} training utterances")
        synthesize_missing_corpus(corpus, num_train, seed)
    cfg = CompareConfig(
        corpus=str(corpus), out=str(out), families=[f.strip() for f in families.split(",") if f.strip()], minutes=minutes,
        threads=threads, device=device, seed=seed, overrides=list(overrides), retrain=retrain, beam_size=beam_size,
        test_limit=test_limit, long_max_concat=long_max_concat, long_per_count=long_per_count, long_min_bucket=long_min_bucket,
        long_beam=long_beam,
        real_manifest=real_manifest, real_limit=real_limit,
    )
    run_compare(cfg, command=_command_line(click.get_current_context()), log=click.echo)


def _command_line(ctx: click.Context) -> str:
    """The invocation spelled out with every option's value (defaults included), to rerun it exactly."""
    parts = ["malsori", "compare"]
    for p in ctx.command.params:
        value = ctx.params[p.name]
        flag = p.opts[-1] if p.opts[-1].startswith("--") else p.opts[0]
        if p.is_flag:
            parts += [flag] if value else []
        elif p.multiple:
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)
