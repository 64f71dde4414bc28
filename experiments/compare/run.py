"""The whole comparison (train or reuse every family, measure, write compare.md, results.json and the plots) and its
command line, `python -m experiments.compare`."""

from __future__ import annotations

import datetime
import shlex
import statistics
from pathlib import Path
from typing import Callable

import click
import torch

from malsori.commands.options import DEVICE, field_type
from malsori.config import to_dict
from malsori.data.manifest import atomic_write_json, read_manifest
from malsori.data.select import evenly_spaced, load_waves
from malsori.errors import ConfigError, MalsoriError
from malsori.provenance import git_commit, machine

from experiments.compare.config import DEFAULT_REAL, FAMILIES, CompareConfig, resolve_family
from experiments.compare.plots import write_plots
from experiments.compare.report import render_report
from experiments.compare.runs import recipe_description, evaluate_family, family_config, train_family, training_stats
from experiments.compare.sets import bucket_edges, bucket_of, build_long_set, corpus_manifests, synthesize_missing_corpus


def run_compare(cfg: CompareConfig, command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) every family, evaluate them all, write compare.md, results.json and the plots; returns the results."""
    if cfg.minutes <= 0 and not any(o.startswith("max_steps=") for o in cfg.overrides):
        raise ConfigError("minutes: the training budget must be > 0 (or give max_steps= in overrides)")
    recipes = {resolve_family(f).stem: resolve_family(f) for f in cfg.families}
    corpus = corpus_manifests(cfg.corpus)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        train_durs = [u.duration for u in read_manifest(corpus["train"]).utterances]
        if not train_durs:
            raise MalsoriError(f"{corpus['train']}: no utterances")
        median, longest = statistics.median(train_durs), max(train_durs)
        long_utts = build_long_set(corpus["test"], out / "long_test", cfg.long_max_concat, cfg.long_per_count, cfg.long_gap, cfg.seed)
        edges = bucket_edges(median, [u.duration for u in long_utts], cfg.long_min_bucket)
        sets = {"test": load_waves(evenly_spaced(read_manifest(corpus["test"]).utterances, cfg.test_limit))[:2],
                "long": load_waves(long_utts)[:2]}
        # lengths inside the training range: the test split in buckets of half the training median
        test_durs = [u.duration for u in sets["test"][0]]
        if not test_durs:
            raise MalsoriError(f"{corpus['test']}: no readable test utterances")
        test_edges = bucket_edges(median / 2, test_durs, cfg.long_min_bucket)
        real_note = ""
        if cfg.real_limit > 0 and cfg.real_manifest and Path(cfg.real_manifest).is_file():
            sets["real"] = load_waves(evenly_spaced(read_manifest(cfg.real_manifest).utterances, cfg.real_limit))[:2]
        else:
            why = "real_limit is 0" if cfg.real_limit <= 0 else f"{cfg.real_manifest or 'no manifest'} not found"
            real_note = f"real speech skipped: {why}"
            log(real_note)
        configs = {name: family_config(cfg, recipe, corpus, out / "runs" / name) for name, recipe in recipes.items()}  # typos fail now
        families: dict[str, dict] = {}
        failed: dict[str, str] = {}
        for name, recipe in recipes.items():
            tcfg = configs[name]
            try:
                model_dir, _ = train_family(tcfg, cfg.retrain, log)
                torch.set_num_threads(cfg.threads)  # train() sets it too; decoding uses the same count
                families[name] = {"recipe": str(recipe), "description": recipe_description(recipe), "model_dir": str(model_dir),
                                  "lr": tcfg.optim.lr, "train": training_stats(Path(tcfg.out)),
                                  **evaluate_family(model_dir, cfg, sets, {"test": test_edges, "long": edges}, log)}
            except Exception as e:  # one family failing (out of memory, a diverged run) must not lose the others
                failed[name] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
                log(f"{name}: FAILED, left out of the report ({failed[name]})")
        if not families:
            raise MalsoriError(f"every family failed; {next(iter(failed))}: {next(iter(failed.values()))}")
        long_durs = [u.duration for u in long_utts]
        results = {
            "command": command or "python -m experiments.compare", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "commit": git_commit(), "config": to_dict(cfg),
            "corpus": {"train_utterances": len(train_durs), "train_hours": sum(train_durs) / 3600, "train_median_s": median,
                       "train_max_s": longest, "test_utterances": len(sets["test"][0]), "test_edges": test_edges,
                       "test_bucket_counts": [sum(bucket_of(d, test_edges) == b for d in test_durs) for b in range(len(test_edges) - 1)]},
            "long_set": {"manifest": str(out / "long_test" / "manifest.jsonl"), "utterances": len(long_utts), "edges": edges,
                         "min_s": min(long_durs), "max_s": max(long_durs), "median_s": statistics.median(long_durs),
                         "beyond_train_median": sum(d > median for d in long_durs) / len(long_durs),
                         "beyond_train_max": sum(d > longest for d in long_durs) / len(long_durs),
                         "bucket_counts": [sum(bucket_of(d, edges) == b for d in long_durs) for b in range(len(edges) - 1)]},
            "real": {"manifest": cfg.real_manifest, "utterances": len(sets["real"][0])} if "real" in sets else {"skipped": real_note},
            "families": families,
            "failed": failed,
        }
        atomic_write_json(out / "results.json", results, indent=1)
        plots = write_plots(results, out)
        (out / "compare.md").write_text(render_report(results, plots))
        log(f"report: {out / 'compare.md'}")
        return results
    finally:
        torch.set_num_threads(threads_before)


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
def main(corpus, out, minutes, families, threads, device, beam_size, test_limit, long_max_concat, long_per_count,
         long_min_bucket, long_beam, real_manifest, real_limit, num_train, seed, retrain, overrides) -> None:
    """Train each model family for the same wall-clock budget, one after another, then compare accuracy (greedy and beam),
    error rate against utterance length, training and decoding speed, and real-speech accuracy in OUT/compare.md.

    Re-running reuses finished families (and their cached scores), so an interrupted comparison picks up where it stopped.
    """
    names = [f.strip() for f in families.split(",") if f.strip()]
    for name in names:  # a typo fails before a corpus is synthesized
        resolve_family(name)
    if not (corpus / "train.jsonl").is_file():
        click.echo(f"{corpus}: no corpus yet, synthesizing {num_train} training utterances")
        synthesize_missing_corpus(corpus, num_train, seed)
    cfg = CompareConfig(
        corpus=str(corpus), out=str(out), families=names, minutes=minutes,
        threads=threads, device=device, seed=seed, overrides=list(overrides), retrain=retrain, beam_size=beam_size,
        test_limit=test_limit, long_max_concat=long_max_concat, long_per_count=long_per_count, long_min_bucket=long_min_bucket,
        long_beam=long_beam,
        real_manifest=real_manifest, real_limit=real_limit,
    )
    run_compare(cfg, command=_command_line(click.get_current_context()), log=click.echo)


def _command_line(ctx: click.Context) -> str:
    """The invocation spelled out with every option's value (defaults included), to rerun it exactly."""
    parts = ["python", "-m", "experiments.compare"]
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
