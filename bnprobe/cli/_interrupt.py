"""Ctrl-C during ``bnprobe run`` or ``bnprobe reproduce``: which runs finished, and the command that resumes.

The study raises :class:`bnprobe.errors.StudyInterrupted` with the runs it had filed in
``results.json``; :func:`resumable` turns it into one line on stderr and exit code 130 (a shell's
code for SIGINT).  The command is the user's own, shell-quoted, with ``--resume`` added, ``--overwrite``
dropped and ``--out`` filled in when it was left to its default.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
from click.core import ParameterSource

from bnprobe.cli import COMMAND_LINE
from bnprobe.errors import StudyInterrupted


@contextlib.contextmanager
def resumable(out_dir: str | Path) -> Iterator[None]:
    """Around a study writing to ``out_dir``: on Ctrl-C, say what finished and how to resume, then exit 130."""
    try:
        yield
    except StudyInterrupted as exc:
        ctx = click.get_current_context()
        finished = ", ".join(f"{variant} seed {seed}" for variant, seed in exc.finished) or "none"
        click.echo(f"interrupted; finished runs: {finished}; resume with: {resume_command(ctx, out_dir)}", err=True)
        ctx.exit(130)


def resume_command(ctx: click.Context, out_dir: str | Path) -> str:
    """The command line of ``ctx`` made to resume the study in ``out_dir``, ready to paste into a shell."""
    words = [word for word in ctx.meta.get(COMMAND_LINE, ["bnprobe", str(ctx.info_name)]) if word != "--overwrite"]
    if ctx.params.get("overwrite") and ctx.get_parameter_source("overwrite") is ParameterSource.DEFAULT_MAP:
        words.append("--no-overwrite")  # set in the study file: --resume could not go with it
    if not ctx.params.get("resume"):
        words.append("--resume")
    if ctx.get_parameter_source("out") is ParameterSource.DEFAULT:
        words += ["--out", str(out_dir)]
    return shlex.join(words)
