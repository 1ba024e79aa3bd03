"""The ``bnprobe`` command line: a thin shell that parses, calls the Python API and renders.

Bad input raises :class:`bnprobe.errors.BnprobeError` somewhere in the API; here it becomes one line
on stderr and exit code 2, with no traceback.  So does a path the file system refuses (a file where a
folder should be, no permission): the options name the paths, so they are input too.  Ctrl-C during
a study ends in one line naming the finished runs and the command that resumes them, exit code 130
(:mod:`bnprobe.cli.interrupt`).
"""

from __future__ import annotations

import shlex

import click

from bnprobe.errors import BnprobeError

PATH_ERRORS = (FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
COMMAND_LINE = "bnprobe.command_line"
"""``ctx.meta`` key of the command line as given: the program (``bnprobe``, ``python -m bnprobe``), its arguments."""


class _Group(click.Group):
    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra) -> click.Context:
        command_line = [*shlex.split(info_name or "bnprobe"), *args]  # before parsing consumes the arguments
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[COMMAND_LINE] = command_line
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BnprobeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except PATH_ERRORS as exc:
            if exc.filename is None:  # not about a path the command was given: a bug, shown in full
                raise
            click.echo(f"error: cannot use {exc.filename}: {exc.strerror}; check the paths given to this command",
                       err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnprobe")
def cli() -> None:
    """What does BatchNorm do to a CNN's hidden representations?"""


def main() -> None:
    """Console-script entry point."""
    cli()


from bnprobe.cli import compare, list_probes, report, reprobe, reproduce, run, surgery  # noqa: E402,F401  (registers the subcommands)
