"""``bnprobe report OUT``: render a finished study again from its results.json and rewrite its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.params import split_list

if TYPE_CHECKING:
    from bnprobe.report import Metrics

metrics_option = click.option(
    "--metrics", default="key", show_default=True,
    help="Metrics to show: key (each probe's key metric), all, or a comma list such as ari,nmi.")


def parse_metrics(text: str) -> Metrics:
    """``--metrics`` as :func:`bnprobe.report.render` takes it: None for ``key``, ``"all"``, or the names."""
    if text.strip() == "key":
        return None
    if text.strip() == "all":
        return "all"
    return split_list(text)


@cli.command("report")
@click.argument("out", type=click.Path())
@metrics_option
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write results.csv and plots/ (PNG + CSV) into the study folder again.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout instead of tables.")
def report_command(out: str, metrics: str, plots: bool, as_json: bool) -> None:
    """Show the study saved in OUT (a folder or a results.json) and write its CSV and plots again.

    --metrics picks the tables; the plots are always the default ones (see docs/results.md).  A study
    on a read-only disk is shown all the same, with a line saying that nothing was written.
    """
    from bnprobe.report import render, summary_json, write_outputs
    from bnprobe.report._results import Results

    results = Results.load(out)
    console = Console(stderr=as_json)
    if as_json:
        click.echo(json.dumps(summary_json(results), indent=2, allow_nan=False))
    else:
        render(results, console, metrics=parse_metrics(metrics))
    if plots:
        folder = Path(out) if Path(out).is_dir() else Path(out).parent
        try:
            written = write_outputs(results, folder)
        except OSError as exc:  # a study on a read-only disk (or a full one) is still shown, as it was
            if exc.filename is None:
                raise
            console.print(f"did not rewrite the study's files: cannot write {exc.filename}: {exc.strerror}; "
                          "the files already there are as they were (--no-plots does not try)", highlight=False)
            return
        if not as_json:
            console.print(f"wrote {len(written)} files: {folder / 'results.csv'}, {folder / 'plots'}/", highlight=False)
