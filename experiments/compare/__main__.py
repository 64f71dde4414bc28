"""`python -m experiments.compare --corpus DIR --out DIR [options]`: the model-family comparison (run.py); a user error
(a bad recipe key, a missing manifest) is one line `error: ...` and exit status 2, as in the malsori CLI."""

import sys

import click

from experiments.compare.run import main
from malsori.errors import MalsoriError

if __name__ == "__main__":
    try:
        main(prog_name="python -m experiments.compare")
    except MalsoriError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
