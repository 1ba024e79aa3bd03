"""What a study tells its front end while it runs: :class:`StudyListener`'s hooks, and where each run's
time went (:class:`RunTimings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bnprobe.report._results import RunResult
from bnprobe.surgery._swap import SwapReport


@dataclass(frozen=True)
class RunTimings:
    """Where one run's wall time went, in seconds (what :meth:`StudyListener.run_finished` is told).

    ``train`` is None for a run not trained here: kept on ``--resume`` (``kept``) or probed again by
    :func:`reprobe_study`.  ``capture`` includes the streaming probes fed during capture; ``probe``
    is the time the study spent on the run's probes (probe workers running beside the next run's
    training are not counted twice).  A fused run's ``train`` is its group's, ``fused_runs`` runs.
    ``train_parts`` splits ``train`` into :data:`bnprobe.train.TRAIN_PARTS` (set-up, steps, per-epoch
    saves, evaluation; :attr:`bnprobe.train.TrainResult.timings`).
    """

    train: float | None = None
    capture: float = 0.0
    probe: float = 0.0
    kept: bool = False
    fused_runs: int = 1
    train_parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return (self.train or 0.0) + self.capture + self.probe


class StudyListener:
    """Hooks a front end overrides to show progress; every method is optional."""

    def study_prepared(self, setup: float, preflight: float) -> None:
        """Before the first run: seconds spent setting up (data, probe workers, the seed-0 model, the
        saved runs on resume) and on the pre-flight check of every variant (:meth:`Study.check_variants`)."""

    def study_started(self, total_runs: int) -> None: ...
    def task_started(self, variant: str, seeds: list[int], where: str) -> None:
        """A Ray task started on ``variant``'s ``seeds`` in ``where`` (host and process); a retried task
        starts again, resuming its runs from their last epoch."""

    def variant_made(self, variant: str, seed: int, report: SwapReport) -> None: ...
    def training_planned(self, variant: str, seeds: list[int], reason: str | None) -> None:
        """How ``variant``'s pending ``seeds`` train: fused (``reason`` None) or one by one, and why."""

    def training_started(self, variant: str, seed: int, epochs: int) -> None: ...
    def fused_steps(self, variant: str, how: str) -> None:
        """How ``variant``'s fused steps ran: replayed from a CUDA graph, or eager and why."""

    def training_step(self, variant: str, seed: int, step: int, steps: int, epoch: int) -> None:
        """After every optimiser step: ``step`` of the epoch's ``steps``, in ``epoch`` (1-based; a resumed run
        counts its epochs from the start of its training, not of this session).  Nothing is read from the device."""

    def epoch_done(self, variant: str, seed: int, epoch: int, metrics: dict) -> None: ...
    def capture_started(self, variant: str, seed: int, samples: int) -> None: ...
    def capture_batch(self, variant: str, seed: int, samples: int) -> None: ...
    def probing_started(self, variant: str, seed: int, steps: int) -> None: ...
    def probe_step(self, variant: str, seed: int, probe: str, layer: str) -> None: ...
    def run_done(self, run: RunResult, seconds: float) -> None:
        """A run is filed, after ``seconds`` (:attr:`RunTimings.total`); called by :meth:`run_finished`."""

    def run_finished(self, run: RunResult, timings: RunTimings) -> None:
        """A run is filed (or kept, on resume), with where its time went.

        By default this calls :meth:`run_done` with the total, so a listener written against it goes on working.
        """
        self.run_done(run, timings.total)


class Listeners(StudyListener):
    """Several listeners heard as one: every hook goes to each, in order (a terminal display and a tracker)."""

    def __init__(self, *listeners: StudyListener) -> None:
        self.listeners = listeners


def _forwarding(name: str):
    def hook(self: Listeners, *args, **kwargs) -> None:
        for listener in self.listeners:
            getattr(listener, name)(*args, **kwargs)
    hook.__name__ = name
    hook.__doc__ = f"{name} of every listener."
    return hook


HOOKS = [name for name, value in vars(StudyListener).items() if callable(value) and not name.startswith("_")]
"""The names of every :class:`StudyListener` hook (what a listener that passes hooks on implements)."""

for _hook in HOOKS:
    setattr(Listeners, _hook, _forwarding(_hook))
