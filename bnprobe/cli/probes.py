"""``bnprobe probes``: which probes are installed, where they come from, what they take."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bnprobe.cli import cli
from bnprobe.probes.base import list_probes


@cli.command("probes")
def probes_command() -> None:
    """List every probe (built-in and plugins) with its source and parameters."""
    table = Table(title="probes")
    for column in ("name", "source", "needs", "description", "parameters"):
        table.add_column(column, overflow="fold")  # whole names and defaults, however narrow the terminal
    for info in list_probes(include_broken=True):
        if info.broken:
            table.add_row(info.name, info.source, "—", f"[red]broken: {info.error}[/red]", "")
            continue
        params = "\n".join(f"{k}={v!r}" for k, v in info.cls.param_defaults().items())
        table.add_row(info.name, info.source, info.cls.needs, info.cls.description, params or "—")
    Console().print(table)
