"""``bnprobe compare OUT_A OUT_B``: two finished studies side by side."""

from __future__ import annotations

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.cli.report import metrics_option, parse_metrics
from bnprobe.compare import render_comparison
from bnprobe.results import Results


@cli.command("compare")
@click.argument("out_a", type=click.Path())
@click.argument("out_b", type=click.Path())
@metrics_option
def compare_command(out_a: str, out_b: str, metrics: str) -> None:
    """Compare the studies in OUT_A and OUT_B: per layer and variant, A, B and B − A with its interval."""
    render_comparison(Results.load(out_a), Results.load(out_b), Console(), metrics=parse_metrics(metrics),
                      sources=(out_a, out_b))
