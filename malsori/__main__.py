"""`python -m malsori ...` is the `malsori` command; torchrun launches it so: `torchrun ... -m malsori train ...`."""

from malsori.cli import main

main(prog_name="malsori")
