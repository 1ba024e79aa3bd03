"""``bnprobe report OUT``: render a finished study again from its results.json."""

from __future__ import annotations

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.report import render
from bnprobe.results import Results


@cli.command("report")
@click.argument("out", type=click.Path())
def report_command(out: str) -> None:
    """Show the tables of the study saved in OUT (a folder or a results.json)."""
    render(Results.load(out), Console())
