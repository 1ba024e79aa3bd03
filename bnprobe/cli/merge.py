"""``bnprobe merge OUT DIR...``: join the shards of one study into one study folder."""

from __future__ import annotations

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.cli.report import metrics_option, parse_metrics


@cli.command("merge")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--overwrite/--no-overwrite", default=False, help="Replace a study already in OUT.")
@metrics_option
def merge_command(out: str, shards: tuple[str, ...], overwrite: bool, metrics: str) -> None:
    """Join the studies in SHARDS (run with --shard K/N or --seeds A-B) into OUT, and report it.

    The shards must be parts of one study (the same config but for their seeds), with every run in
    exactly one of them; OUT gets results.json, the CSVs, plots/ and the checkpoints, as from one run.
    """
    from bnprobe.report import render
    from bnprobe.study._shards import merge_studies

    merged = merge_studies(out, list(shards), overwrite=overwrite)
    console = Console()
    render(merged, console, metrics=parse_metrics(metrics))
    console.print(f"merged {len(shards)} shards, {len(merged.runs)} runs: {out}/results.json, results.csv, plots/, "
                  "checkpoints/", highlight=False)
