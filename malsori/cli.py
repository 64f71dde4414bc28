"""The `malsori` command line: one group, subcommands defined next to what they drive (malsori/commands/)."""

from __future__ import annotations

import sys

import click

from malsori.errors import MalsoriError


class _Group(click.Group):
    """A click group that prints user errors (MalsoriError, and click's own usage errors: a bad option value, a
    missing argument) as one line and exits with status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MalsoriError as e:
            if not getattr(e, "printed_elsewhere", False):  # e.g. by the training rank that failed (malsori.distributed)
                click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            message = " ".join(e.format_message().split())  # click lists choices on several lines: keep one
            click.echo(f"error: {message}{hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="malsori")
def main() -> None:
    """malsori: offline-first sequence-to-sequence toolkit (speech recognition, LMs, translation)."""


@main.group(cls=_Group)
def data() -> None:
    """Make and import speech corpora (manifests of audio + text)."""


def _register() -> None:
    from malsori.commands import corpora, demo, export, llm, lm, recognize, serve, stream, synth, tokenizer, train, tune

    data.add_command(synth.synth)
    data.add_command(corpora.import_)
    main.add_command(tokenizer.tokenizer)
    main.add_command(train.train)
    main.add_command(recognize.evaluate)
    main.add_command(recognize.transcribe)
    main.add_command(demo.demo)
    main.add_command(stream.stream)
    main.add_command(serve.serve)
    main.add_command(lm.lm)
    main.add_command(llm.llm)
    main.add_command(export.export)
    main.add_command(tune.tune_lm)


_register()


if __name__ == "__main__":
    main()
