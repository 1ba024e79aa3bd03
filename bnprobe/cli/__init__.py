"""The ``bnprobe`` command line: a thin shell that parses, calls the Python API and renders.

Bad input raises :class:`bnprobe.errors.BnprobeError` somewhere in the API; here it becomes one line
on stderr and exit code 2, with no traceback.  So does a path the file system refuses (a file where a
folder should be, no permission, a read-only or full disk; :mod:`bnprobe.cli._faults`): the options name
the paths, so they are input too.  Ctrl-C during
a study ends in one line naming the finished runs and the command that resumes them, exit code 130
(:mod:`bnprobe.cli._interrupt`).
"""

from __future__ import annotations

import importlib
import shlex

import click

from bnprobe._hints import command_line_in_use
from bnprobe.cli._faults import fault_line
from bnprobe.errors import BnprobeError

COMMAND_LINE = "bnprobe.command_line"
"""``ctx.meta`` key of the command line as given: the program (``bnprobe``, ``python -m bnprobe``), its arguments."""


COMMANDS = {
    "compare": "bnprobe.cli.compare",
    "merge": "bnprobe.cli.merge",
    "probe": "bnprobe.cli.reprobe",
    "probes": "bnprobe.cli.list_probes",
    "report": "bnprobe.cli.report",
    "reproduce": "bnprobe.cli.reproduce",
    "run": "bnprobe.cli.run",
    "surgery": "bnprobe.cli.surgery",
}
"""Each subcommand -> the module that defines it, imported only when the command is named or listed.

The modules import the Python API inside their commands, so ``bnprobe --help`` and every
``bnprobe CMD --help`` read no torch (``bench/cli_startup.py``)."""


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(COMMANDS[name])  # its @cli.command registers it
        return self.commands.get(name)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra) -> click.Context:
        command_line = [*shlex.split(info_name or "bnprobe"), *args]  # before parsing consumes the arguments
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[COMMAND_LINE] = command_line
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            with command_line_in_use():  # the API's advice names flags, not keyword arguments
                return super().invoke(ctx)
        except BnprobeError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            if exc.filename is None:  # not about a path the command was given: a bug, shown in full
                raise
            click.echo(f"error: {fault_line(exc, self._flags(ctx))}", err=True)
            ctx.exit(2)

    def _flags(self, ctx: click.Context) -> set[str]:
        """The option flags (``--resume``) of the subcommand ``ctx`` invoked."""
        command = self.get_command(ctx, ctx.invoked_subcommand or "")
        return {flag for param in (command.params if command else ()) for flag in param.opts if flag.startswith("--")}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnprobe")
def cli() -> None:
    """What does BatchNorm do to a CNN's hidden representations?"""


def main() -> None:
    """Console-script entry point."""
    cli()

