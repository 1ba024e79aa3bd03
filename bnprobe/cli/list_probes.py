"""``bnprobe probes``: which probes are installed, where they come from, what they take and emit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bnprobe.cli import cli

if TYPE_CHECKING:
    from bnprobe.probes import ProbeInfo


def metrics_table(info: ProbeInfo) -> Table:
    """The metrics ``info``'s probe declares (``Probe.metrics``): definition, range and direction."""
    table = Table(title=f"{info.name} — metrics (key: {info.cls.key_metric})", title_justify="left")
    for column in ("metric", "definition", "range", "direction"):
        table.add_column(column, overflow="fold")
    for name, metric in info.cls.metrics.items():
        table.add_row(*(escape(text) for text in (name, metric.definition, metric.range, metric.direction)))
    if not info.cls.metrics:
        table.add_row("—", "this probe declares no metrics", "", "")
    return table


@cli.command("probes")
@click.option("--metrics", "show_metrics", is_flag=True,
              help="List each probe's metrics: definition, range and whether higher is better (docs/metrics.md).")
def probes_command(show_metrics: bool) -> None:
    """List every probe (built-in and plugins) with its source and parameters."""
    from bnprobe.probes import list_probes

    console = Console()
    if show_metrics:
        for info in list_probes():
            console.print(metrics_table(info))
        return
    table = Table(title="probes")
    for column in ("name", "source", "needs", "description", "parameters"):
        table.add_column(column, overflow="fold")  # whole names and defaults, however narrow the terminal
    for info in list_probes(include_broken=True):
        if info.broken:
            table.add_row(info.name, info.source, "—", f"[red]broken: {info.error}[/red]", "")
            continue
        params = "\n".join(f"{k}={v!r}" for k, v in info.cls.param_defaults().items())
        table.add_row(info.name, info.source, info.cls.needs, info.cls.description, params or "—")
    console.print(table)
