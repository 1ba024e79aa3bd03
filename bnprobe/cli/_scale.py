"""The options that spread a study over machines: ``--shard`` (part of the seeds, for array jobs; on
``bnprobe run``) and the Ray executor's ``--executor``, ``--gpus-per-task``, ``--cpus-per-task`` and
``--max-retries`` (on ``bnprobe run`` and ``bnprobe reproduce``; docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

SCALE_OPTIONS = ("shard", "executor", "gpus_per_task", "cpus_per_task", "max_retries")


def shard_option(command: Callable) -> Callable:
    """Add ``--shard`` to ``command`` (``bnprobe run``: a reproduction judges its findings over every seed)."""
    return click.option("--shard", default=None,
                        help="K/N: run only the K-th of N parts of the seeds (every N-th seed from the K-th), e.g. "
                             "one task of a SLURM array; bnprobe merge joins the parts.")(command)


def executor_options(command: Callable) -> Callable:
    """Add the Ray executor's options to ``command``; :func:`scale_settings` reads them back."""
    for option in reversed((
            click.option("--executor", default=None,
                         help="Where the runs train: local, or ray (a local Ray instance) or ray:ADDRESS (a cluster; "
                              "ray:auto for the one `ray start` runs) [default: local]."),
            click.option("--gpus-per-task", default=None, type=float,
                         help="GPUs each Ray task asks for; a fraction packs tasks on one GPU, e.g. 0.25 "
                              "[default: 1 on CUDA, else 0]."),
            click.option("--cpus-per-task", default=None, type=float, help="CPUs each Ray task asks for [default: 1]."),
            click.option("--max-retries", default=None, type=int,
                         help="Retries of a Ray task whose worker died, each resuming from the run's last epoch "
                              "[default: 3]."))):
        command = option(command)
    return command


def scale_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The scale-out options given, as :class:`bnprobe.study.StudyConfig` fields (the others keep its defaults)."""
    return {name: options[name] for name in SCALE_OPTIONS if options.get(name) is not None}
