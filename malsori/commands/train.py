"""`malsori train RECIPE [key=value ...]`."""

from __future__ import annotations

import os

import click

from malsori.recipes import resolve_recipe


def check_run(cfg) -> None:
    """What the config's own ranges cannot know, checked before the run folder is made: that this machine has
    `device` (train() checks it too, later; an `out` that is a file is refused by train() itself)."""
    from malsori.device import check_device

    check_device(cfg.device)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("recipe")
@click.argument("overrides", nargs=-1)
def train(recipe: str, overrides: tuple[str, ...]) -> None:
    """Train a model from a YAML RECIPE (a path or a name in recipes/), with key=value OVERRIDES. The recipe's
    `task:` says what is trained: asr (speech recognition, the default) or lm (a language model on text files).

    Nested keys use dots, e.g. `malsori train conformer_ctc_demo data.train=corpus/train.jsonl optim.lr=1e-3 out=exp/a`.
    Re-running with the same out= resumes from the last checkpoint; the final model is written to OUT/model.

    Several processes: torchrun --nproc_per_node=N -m malsori train RECIPE ... (docs/distributed.md). The recipe's
    batch (batch.* for speech, data.batch_size for an LM) is per process: an optimizer step sees
    N x optim.accum_grad batches, so the same recipe on N processes trains with an N times larger batch.
    Resume with the number of processes that started the run.
    """
    from malsori.tasks import load_train_config
    from malsori.train import train as run

    cfg = load_train_config(resolve_recipe(recipe), list(overrides))
    check_run(cfg)
    model_dir = run(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line from rank 0
        click.echo(f"model: {model_dir}")
