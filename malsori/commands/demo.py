"""`malsori demo`: the released model on human recordings, then synthesize a corpus, train a small Conformer-CTC
for a fixed number of steps, score it, transcribe a held-out file."""

from __future__ import annotations

from pathlib import Path

import click

DEMO_AUDIO = Path(__file__).resolve().parents[2] / "demo" / "manifest.jsonl"  # held-out human recordings (demo/README.md)
RELEASED = "en-small"


def transcribe_human_recordings(manifest: Path = DEMO_AUDIO, model: str = RELEASED) -> float | None:
    """Print reference vs recognized text of the released model on the shipped human recordings; their WER, or None
    when the model or the recordings are not there (a wheel without the repository's models/ and demo/)."""
    from malsori.data.manifest import read_manifest
    from malsori.errors import MalsoriError
    from malsori.metrics import error_rates
    from malsori.pretrained import Recognizer
    from malsori.text import normalize

    try:
        utts = read_manifest(manifest, strict=True).utterances
        out = Recognizer.load(model, device="cpu").transcribe_utterances(utts)
    except MalsoriError as e:
        click.echo(f"  skipped: {e}")
        return None
    for u, t in zip(utts, out):
        click.echo(f"  {u.audio}\n    reference:  {normalize(u.text)}\n    recognized: {t.text}")
    rates = error_rates([normalize(u.text) for u in utts], [t.text for t in out])
    click.echo(f"  {rates.line()}")
    return rates.wer


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("exp/demo"), show_default=True, help="Folder for the corpus, the run and the model.")
@click.option("--steps", type=click.IntRange(min=1), default=1680, show_default=True,
              help="Training steps (about 8 minutes on 2 idle cores; a busy machine gets the same model, later).")
@click.option("--num-train", type=click.IntRange(min=1), default=3000, show_default=True, help="Training utterances to synthesize.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, steps: int, num_train: int, seed: int) -> None:
    """The README's main job, start to finish, on a laptop CPU with no downloads."""
    from malsori.recipes import resolve_recipe
    from malsori.config import load_config
    from malsori.data.synth import SynthConfig, synthesize_corpus
    from malsori.decode.options import DecodeOptions
    from malsori.evaluate import evaluate_manifest
    from malsori.pretrained import Recognizer
    from malsori.train import TrainConfig, train

    click.secho(f"[1/5] the released model ({RELEASED}) on human recordings it never heard (demo/README.md)", bold=True)
    transcribe_human_recordings()
    click.secho(f"[2/5] synthesizing a corpus with eSpeak NG into {out / 'corpus'}", bold=True)
    manifests = synthesize_corpus(SynthConfig(num_train=num_train, num_dev=150, num_test=200, seed=seed), out / "corpus")
    click.secho(f"[3/5] training a small Conformer-CTC on it for {steps} steps", bold=True)
    cfg = load_config(TrainConfig, resolve_recipe("conformer_ctc_demo"), [
        f"data.train={manifests['train']}", f"data.valid={manifests['dev']}", f"out={out / 'run'}",
        f"max_steps={steps}", f"seed={seed}",
    ])
    model_dir = train(cfg)
    click.secho("[4/5] scoring on held-out voices and sentences (test split)", bold=True)
    rec = Recognizer.load(model_dir)
    for method in ("greedy", "beam"):
        res = evaluate_manifest(rec, manifests["test"], DecodeOptions(method=method), report=out / f"eval_test_{method}.tsv")
        click.echo(f"  {method:6s} {res.summary()}")
    click.secho("[5/5] transcribing a held-out file", bold=True)
    from malsori.data.manifest import read_manifest

    utt = read_manifest(manifests["test"]).utterances[0]
    t = rec.transcribe(utt.audio_path)
    click.echo(f"  file:       {utt.audio_path}\n  reference:  {utt.text}\n  recognized: {t.text}")
    click.echo(f"\nmodel folder: {model_dir}\ntry: malsori transcribe {model_dir} {utt.audio_path} --json")
