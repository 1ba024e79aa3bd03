"""``bnprobe probe``: probe weights without training them.

``bnprobe probe OUT --probes ...`` probes a finished study again from its checkpoints;
``bnprobe probe MODEL --weights bn=a.pt,identity=b.pt`` probes variants trained elsewhere, as a
``probe-only`` study (:attr:`bnprobe.study.StudyConfig.weights`) reported exactly as one.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.cli import cli
from bnprobe.cli.run import default_out, parse_workers, run_and_report
from bnprobe.errors import BnprobeError

PROBES_HELP = "Comma list of probes, with parameters: 'hdbscan(dims=30)' [with --weights: sparsity,hdbscan]."
WEIGHTS_HELP = ("Probe MODEL's variants trained elsewhere, one file per variant and seed: "
                "bn=a.pt,identity=b.pt,identity@1=c.pt (VARIANT is seed 0).  Each must fit the swapped model.")
STUDY_ONLY = ("dataset", "samples", "layers", "spatial", "batch_size", "recalibrate_bn", "out", "overwrite",
              "as_json")
"""Options that set up a new study, so only go with ``--weights``."""


@cli.command("probe")
@click.argument("target", metavar="OUT|MODEL", type=click.Path())
@click.option("--weights", default=None, help=WEIGHTS_HELP)
@click.option("--probes", default=None, help=PROBES_HELP)
@click.option("--dataset", default="digits", show_default=True,
              help="With --weights: the data to evaluate and probe on.")
@click.option("--samples", default=5000, show_default=True, type=int, help="With --weights: training samples to probe.")
@click.option("--layers", default="act", show_default=True,
              help="With --weights: layer kinds (act, conv, norm) or globs.")
@click.option("--spatial", default="flatten", show_default=True,
              help="With --weights: per-sample vectors: flatten, channel_mean or pool:K.")
@click.option("--batch-size", default=128, show_default=True, type=int, help="With --weights: evaluation batch.")
@click.option("--recalibrate-bn/--no-recalibrate-bn", default=False, show_default=True,
              help="With --weights: recompute the BatchNorm statistics over the training data before probing.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="With --weights: output folder [default: runs/<model>-<timestamp>].")
@click.option("--overwrite/--no-overwrite", default=False, help="With --weights: replace the study in --out.")
@click.option("--json", "as_json", is_flag=True, help="With --weights: print the machine-readable summary.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--data-root", default=None, help="Folder with the dataset's files [default: as in the study].")
@click.option("--probe-workers", default="auto", show_default=True,
              help="Processes that run HDBSCAN in parallel: a number, or auto (one per core but one, from 4 cores).")
@click.option("--quiet", is_flag=True, help="No progress, only the final report.")
@click.option("--verbose", is_flag=True, help="Also print internal notes (none yet when only probing).")
@click.pass_context
def probe_command(ctx: click.Context, target: str, weights: str | None, probes: str | None, dataset: str,
                  samples: int, layers: str, spatial: str, batch_size: int, recalibrate_bn: bool, out: str | None,
                  overwrite: bool, as_json: bool, device: str, data_root: str | None, probe_workers: str,
                  quiet: bool, verbose: bool) -> None:
    """Probe without training: the study in OUT again, or MODEL's variants trained elsewhere (--weights).

    OUT: PROBES run on every run of the study from its checkpoints; their numbers are added or
    replaced, training numbers and other probes kept, and results.json, results.csv and plots/ are
    written again.  MODEL --weights: each file is loaded into its variant of MODEL, evaluated and
    probed as it is, and reported as a study in --out.
    """
    from bnprobe.probes import split_probe_list

    if weights is None:
        given = next((name for name in STUDY_ONLY if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE),
                     None)
        if given is not None:
            raise BnprobeError(f"--{given.replace('_', '-').replace('as-json', 'json')} sets up a study of weights "
                               "trained elsewhere; add --weights, or leave it out to probe the study in OUT again")
        if probes is None:
            raise BnprobeError("no probes given: name the probes to run again with --probes, e.g. --probes cka")
        _reprobe(target, split_probe_list(probes), device, data_root, probe_workers, quiet, verbose)
        return
    from bnprobe.study import StudyConfig
    from bnprobe.study._config import run_weights, split_run_key
    from bnprobe.train._loop import TrainConfig

    runs = run_weights(weights)
    keys = [split_run_key(key) for key in runs]
    variants = sorted(dict.fromkeys(variant for variant, _ in keys), key=lambda v: v != REFERENCE_VARIANT)
    config = StudyConfig(model=target, dataset=dataset, data_root=data_root, variants=variants,
                         seeds=1 + max(seed for _, seed in keys), samples=samples,
                         probes=split_probe_list(probes or "sparsity,hdbscan"), device=device, layers=layers,
                         spatial=spatial, weights=runs, mode="probe-only", recalibrate_bn=recalibrate_bn,
                         probe_workers=parse_workers(probe_workers), train=TrainConfig(batch_size=batch_size))
    run_and_report(config, Path(out) if out else default_out(target), resume=False, overwrite=overwrite, log=None,
                   quiet=quiet, verbose=verbose, as_json=as_json)


def _reprobe(out: str, probes: list[str], device: str, data_root: str | None, probe_workers: str, quiet: bool,
             verbose: bool) -> None:
    from bnprobe.cli._progress import RichListener
    from bnprobe.report import render
    from bnprobe.study import reprobe_study

    with RichListener(quiet=quiet, verbose=verbose) as listener:
        results = reprobe_study(out, probes, device=device, data_root=data_root,
                                probe_workers=parse_workers(probe_workers), listener=listener)
    render(results, Console())
