"""`malsori demo`: synthesize a corpus, train a small Conformer-CTC, score it, transcribe a held-out file."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("exp/demo"), show_default=True, help="Folder for the corpus, the run and the model.")
@click.option("--minutes", type=float, default=8.0, show_default=True, help="Training wall-clock budget.")
@click.option("--num-train", type=int, default=3000, show_default=True, help="Training utterances to synthesize.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, minutes: float, num_train: int, seed: int) -> None:
    """The README's main job, start to finish, on a laptop CPU with no downloads."""
    from malsori.commands.train import resolve_recipe
    from malsori.config import load_config
    from malsori.data.synth import SynthConfig, synthesize_corpus
    from malsori.decode.options import DecodeOptions
    from malsori.evaluate import evaluate_manifest
    from malsori.pretrained import Recognizer
    from malsori.train import TrainConfig, train

    click.secho(f"[1/4] synthesizing a corpus with eSpeak NG into {out / 'corpus'}", bold=True)
    manifests = synthesize_corpus(SynthConfig(num_train=num_train, num_dev=150, num_test=200, seed=seed), out / "corpus")
    click.secho(f"[2/4] training a Conformer-CTC for {minutes:g} minutes", bold=True)
    cfg = load_config(TrainConfig, resolve_recipe("conformer_ctc_demo"), [
        f"data.train={manifests['train']}", f"data.valid={manifests['dev']}", f"out={out / 'run'}",
        f"max_minutes={minutes}", f"seed={seed}",
    ])
    model_dir = train(cfg)
    click.secho("[3/4] scoring on held-out voices and sentences (test split)", bold=True)
    rec = Recognizer.load(model_dir)
    for method in ("greedy", "beam"):
        res = evaluate_manifest(rec, manifests["test"], DecodeOptions(method=method), report=out / f"eval_test_{method}.tsv")
        click.echo(f"  {method:6s} {res.summary()}")
    click.secho("[4/4] transcribing a held-out file", bold=True)
    from malsori.data.manifest import read_manifest

    utt = read_manifest(manifests["test"]).utterances[0]
    t = rec.transcribe(utt.audio_path)
    click.echo(f"  file:       {utt.audio_path}\n  reference:  {utt.text}\n  recognized: {t.text}")
    click.echo(f"\nmodel folder: {model_dir}\ntry: malsori transcribe {model_dir} {utt.audio_path} --json")
