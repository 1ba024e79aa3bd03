"""``bnprobe compare OUT_A OUT_B``: two finished studies side by side."""

from __future__ import annotations

import json

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.cli.report import metrics_option, parse_metrics


@cli.command("compare")
@click.argument("out_a", type=click.Path())
@click.argument("out_b", type=click.Path())
@metrics_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the comparison as one JSON object on stdout instead of tables (docs/results.md).")
def compare_command(out_a: str, out_b: str, metrics: str, as_json: bool) -> None:
    """Compare the studies in OUT_A and OUT_B: per layer and variant, A, B and B − A with its interval.

    Studies of two models compare what they share (accuracy, model-scope probes); every config field
    in which the two differ is listed.
    """
    from bnprobe.report._compare import comparison_json, render_comparison
    from bnprobe.report._results import Results

    a, b = Results.load(out_a), Results.load(out_b)
    if as_json:
        click.echo(json.dumps(comparison_json(a, b, sources=(out_a, out_b)), indent=2, allow_nan=False))
        return
    render_comparison(a, b, Console(), metrics=parse_metrics(metrics), sources=(out_a, out_b))
