"""``bnprobe probe OUT --probes ...``: probe a finished study again, without retraining."""

from __future__ import annotations

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.cli.run import parse_workers


@cli.command("probe")
@click.argument("out", type=click.Path())
@click.option("--probes", required=True, help="Comma list of probes, with parameters: 'hdbscan(dims=30)'.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--data-root", default=None, help="Folder with the dataset's files [default: as in the study].")
@click.option("--probe-workers", default="auto", show_default=True,
              help="Processes that run HDBSCAN in parallel: a number, or auto (one per core but one, from 4 cores).")
@click.option("--quiet", is_flag=True, help="No progress, only the final report.")
@click.option("--verbose", is_flag=True, help="Also print internal notes (none yet when only probing).")
def probe_command(out: str, probes: str, device: str, data_root: str | None, probe_workers: str, quiet: bool,
                  verbose: bool) -> None:
    """Run PROBES on every run of the study in OUT from its checkpoints and update its results.

    Those probes' numbers are added or replaced; training numbers and other probes are kept.
    results.json, results.csv and plots/ are written again with them.
    """
    from bnprobe.cli._progress import RichListener
    from bnprobe.probes import split_probe_list
    from bnprobe.report import render
    from bnprobe.study import reprobe_study

    with RichListener(quiet=quiet, verbose=verbose) as listener:
        results = reprobe_study(out, split_probe_list(probes), device=device, data_root=data_root,
                                probe_workers=parse_workers(probe_workers), listener=listener)
    render(results, Console())
