"""Progress of a running study, on a terminal and off one (a log file, a notebook, a cluster job).

On a terminal: one bar for the whole study and one for the current stage of each run in progress
(one at a time locally, one per running task on Ray) -- training (a step per epoch), capture (a step
per batch of probed samples) and probes (a step per probe and layer) -- each with done/total, elapsed
time and the time left; the study bar's time left is estimated from the runs finished so far.  A Ray
task says in one line where it runs (host and process), and again when it is retried.

Off a terminal (:attr:`rich.console.Console.is_terminal` false) bars would print nothing until the
end, so plain labelled lines are printed instead: one per run and epoch (variant, seed, epoch,
train-mode loss, test accuracy, elapsed, time left), and within a long epoch, a capture or the
probes at least one every :data:`HEARTBEAT_SECONDS` (step k of n), so a log never stays silent long.

Everywhere, every run ends with one line that names it and splits its time into train / capture /
probe (:class:`bnprobe.study.RunTimings`), or says it was kept (``--resume``).  How training was
planned (fused or one run at a time, and why), how fused steps ran, and where set-up, the pre-flight
check and each run's training time went (steps, per-epoch saves, evaluation) are internal notes,
printed only with ``verbose``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bnprobe.report._results import RunResult
from bnprobe.report._stats import format_value
from bnprobe.report._terminal import variant_origin
from bnprobe.study import RunTimings, StudyListener
from bnprobe.surgery._swap import SwapReport

HEARTBEAT_SECONDS = 30.0
"""Off a terminal, the longest a capture or probe stage goes without a line."""


def duration(seconds: float) -> str:
    """``seconds`` for people: ``4.2s``, ``3m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def timing_text(timings: RunTimings) -> str:
    """``done in 12.3s (train 10.1s, capture 1.2s, probe 1.0s)``, or ``kept`` for a run kept on resume."""
    if timings.kept:
        return "kept (finished before --resume)"
    parts = []
    if timings.train is not None:
        fused = f" shared by {timings.fused_runs} fused runs" if timings.fused_runs > 1 else ""
        parts.append(f"train {duration(timings.train)}{fused}")
    parts += [f"capture {duration(timings.capture)}", f"probe {duration(timings.probe)}"]
    return f"done in {duration(timings.total)} ({', '.join(parts)})"


def train_parts_text(timings: RunTimings) -> str:
    """``training: steps 9.0s, saves 0.1s, evaluation 0.8s, set-up 0.2s`` (a ``--verbose`` note); empty
    for a run not trained here."""
    if not timings.train_parts:
        return ""
    names = {"setup": "set-up", "steps": "steps", "saves": "saves", "evaluation": "evaluation"}
    order = ("steps", "saves", "evaluation", "setup")
    return "training: " + ", ".join(f"{names[part]} {duration(timings.train_parts[part])}"
                                    for part in order if part in timings.train_parts)


def done_line(run: RunResult, timings: RunTimings) -> str:
    """The two lines that close a run: which run and where its time went, then its accuracies (and what
    measured them), each short enough for an 80-column terminal."""
    diverged = f"; diverged at epoch {run.diverged_at_epoch}, not probed" if run.diverged_at_epoch is not None else ""
    return (f"{run.variant} seed {run.seed} {timing_text(timings)}\n"
            f"  train acc (eval mode) {format_value(run.train_accuracy)}, "
            f"test acc (eval mode) {format_value(run.test_accuracy)}{diverged}")


@dataclass
class _Stage:
    """The bar of one run's current stage and what its heartbeat line says."""

    task: TaskID
    text: str
    total: int
    started: float
    done: int = 0


class RichListener(StudyListener):
    """Progress bars on a terminal, labelled lines off one (module docstring); ``quiet`` prints nothing,
    ``verbose`` adds the internal notes."""

    def __init__(self, console: Console | None = None, quiet: bool = False, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet, self.verbose = quiet, verbose
        self.lines = not self.console.is_terminal  # off a terminal: lines instead of bars
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, transient=True, disable=quiet or self.lines)
        self.study_task = None
        self.clock = time.monotonic
        self._runs: tuple[int, int] = (0, 0)  # done, total
        self._stages: dict[tuple[str, int], _Stage] = {}  # the current stage of each run in progress
        self._filed: set[tuple[str, int]] = set()  # a Ray task's last events may come in after its run is filed
        self._last_line = 0.0
        self._training: dict[tuple[str, int], tuple[float, int, int]] = {}  # started, first epoch, epochs
        self._epochs_done: dict[tuple[str, int], int] = {}

    def __enter__(self) -> RichListener:
        return self

    def __exit__(self, *exc) -> None:
        if self.study_task is not None:
            self.progress.stop()

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)  # a log does not wrap
            self._last_line = self.clock()

    def study_prepared(self, setup: float, preflight: float) -> None:
        if self.verbose:
            self._say(f"set-up {duration(setup)}, pre-flight check of every variant {duration(preflight)}")

    def study_started(self, total_runs: int) -> None:
        self.progress.start()  # only now: input errors found earlier print one clean line
        self.study_task = self.progress.add_task("study", total=total_runs)
        self._runs = (0, total_runs)
        self._filed.clear()  # a listener heard again (re-probing after the study) starts afresh
        self._last_line = self.clock()

    def variant_made(self, variant: str, seed: int, report: SwapReport) -> None:
        self._say(f"{variant} seed {seed}: {variant_origin(variant, report.n_swapped)}")

    def _stage(self, variant: str, seed: int, description: str, total: int) -> None:
        """Start the bar of a run's next stage, in place of its last one (none for a run already filed)."""
        self._end_stage(variant, seed)
        if (variant, seed) in self._filed:
            return
        self._stages[(variant, seed)] = _Stage(self.progress.add_task(description, total=total), description, total,
                                               self.clock())

    def _end_stage(self, variant: str, seed: int) -> None:
        stage = self._stages.pop((variant, seed), None)
        if stage is not None:
            self.progress.remove_task(stage.task)

    def _advance_stage(self, variant: str, seed: int, steps: int, unit: str) -> None:
        """Advance a run's stage bar; off a terminal, a line when none was printed for a while."""
        stage = self._stages.get((variant, seed))
        if stage is None:
            return
        self.progress.advance(stage.task, steps)
        stage.done += steps
        now = self.clock()
        if self.lines and now - self._last_line >= HEARTBEAT_SECONDS:
            self._say(f"{stage.text}: {stage.done}/{stage.total} {unit}, {duration(now - stage.started)} elapsed")

    def task_started(self, variant: str, seeds: list[int], where: str) -> None:
        self._say(f"{variant} seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}: Ray task on {where}")

    def training_started(self, variant: str, seed: int, epochs: int) -> None:
        self._stage(variant, seed, f"train {variant} seed {seed}", epochs)
        self._training[(variant, seed)] = (self.clock(), -1, epochs)

    def training_step(self, variant: str, seed: int, step: int, steps: int, epoch: int) -> None:
        """Off a terminal, a line when none was printed for :data:`HEARTBEAT_SECONDS` (long epochs)."""
        now = self.clock()
        if not self.lines or now - self._last_line < HEARTBEAT_SECONDS:
            return
        started, _, epochs = self._training.get((variant, seed), (now, -1, 0))
        self._say(f"{variant} seed {seed} epoch {epoch}/{epochs}: step {step}/{steps}, "
                  f"{duration(now - started)} elapsed")

    def epoch_done(self, variant: str, seed: int, epoch: int, metrics: dict) -> None:
        started, first, epochs = self._training.get((variant, seed), (self.clock(), epoch - 1, epoch))
        first = epoch - 1 if first < 0 else first  # a resumed run starts past epoch 0
        self._training[(variant, seed)] = (started, first, epochs)
        self._epochs_done[(variant, seed)] = epoch
        loss = format_value(metrics["loss"])
        stage = self._stages.get((variant, seed))
        if stage is not None:
            self.progress.update(stage.task, completed=epoch, description=f"train {variant} seed {seed} loss {loss}")
        if not self.lines:
            return
        elapsed = self.clock() - started
        left = elapsed / (epoch - first) * (epochs - epoch)
        test = metrics.get("test_accuracy")
        test_text = f", test acc {format_value(test)}" if test is not None else ""
        self._say(f"{variant} seed {seed} epoch {epoch}/{epochs}: loss {loss} (train mode){test_text}, "
                  f"{duration(elapsed)} elapsed, eta {duration(left)}")

    def capture_started(self, variant: str, seed: int, samples: int) -> None:
        self._stage(variant, seed, f"capture {variant} seed {seed}", samples)

    def capture_batch(self, variant: str, seed: int, samples: int) -> None:
        self._advance_stage(variant, seed, samples, "samples")

    def probing_started(self, variant: str, seed: int, steps: int) -> None:
        self._stage(variant, seed, f"probe {variant} seed {seed}", steps)

    def probe_step(self, variant: str, seed: int, probe: str, layer: str) -> None:
        self._advance_stage(variant, seed, 1, "probe steps")

    def training_planned(self, variant: str, seeds: list[int], reason: str | None) -> None:
        if self.verbose:
            how = "fused into one vmapped model" if reason is None else f"one run at a time: {reason}"
            self._say(f"{variant} seeds {', '.join(map(str, seeds))}: {how}")

    def fused_steps(self, variant: str, how: str) -> None:
        if self.verbose:
            self._say(f"{variant} fused steps: {how}")

    def run_finished(self, run: RunResult, timings: RunTimings) -> None:
        self._end_stage(run.variant, run.seed)
        self._filed.add((run.variant, run.seed))
        self.progress.advance(self.study_task)
        done, total = self._runs[0] + 1, self._runs[1]
        self._runs = (done, total)
        self._say(f"[{done}/{total}] {done_line(run, timings)}")
        if self.verbose and timings.train_parts:
            self._say(f"  {train_parts_text(timings)}")
