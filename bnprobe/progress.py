"""Rich progress for a running study with ETA: the whole study, and its current stage.

Stages: training (a step per epoch), capture (a step per batch of probed samples) and probes (a step
per probe and layer).  Each stage bar shows done/total, elapsed time and the time left; the study
bar's time left is estimated from the runs finished so far.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bnprobe.results import RunResult
from bnprobe.study import StudyListener
from bnprobe.surgery import SwapReport


class RichListener(StudyListener):
    """Shows one bar for the whole study and one for the current stage; quiet prints nothing."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.console, transient=True, disable=quiet)
        self.study_task = None
        self.stage_task = None

    def __enter__(self) -> RichListener:
        return self

    def __exit__(self, *exc) -> None:
        if self.study_task is not None:
            self.progress.stop()

    def study_started(self, total_runs: int) -> None:
        self.progress.start()  # only now: input errors found earlier print one clean line
        self.study_task = self.progress.add_task("study", total=total_runs)

    def variant_made(self, variant: str, seed: int, report: SwapReport) -> None:
        if not self.quiet:
            what = "model as built" if variant == "bn" else f"{report.n_swapped} norm layers swapped"
            self.progress.console.print(f"[bold]{variant}[/bold] seed {seed}: {what}", highlight=False)

    def _stage(self, description: str, total: int) -> None:
        if self.stage_task is not None:
            self.progress.remove_task(self.stage_task)
        self.stage_task = self.progress.add_task(description, total=total)

    def training_started(self, variant: str, seed: int, epochs: int) -> None:
        self._stage(f"train {variant} seed {seed}", epochs)

    def epoch_done(self, variant: str, seed: int, epoch: int, metrics: dict) -> None:
        self.progress.update(self.stage_task, completed=epoch,
                             description=f"train {variant} seed {seed} loss {metrics['loss']:.3f}")

    def capture_started(self, variant: str, seed: int, samples: int) -> None:
        self._stage(f"capture {variant} seed {seed}", samples)

    def capture_batch(self, variant: str, seed: int, samples: int) -> None:
        self.progress.advance(self.stage_task, samples)

    def probing_started(self, variant: str, seed: int, steps: int) -> None:
        self._stage(f"probe {variant} seed {seed}", steps)

    def probe_step(self, variant: str, seed: int, probe: str, layer: str) -> None:
        self.progress.advance(self.stage_task)

    def training_planned(self, variant: str, seeds: list[int], reason: str | None) -> None:
        if not self.quiet:
            how = "fused into one vmapped model" if reason is None else f"one run at a time: {reason}"
            self.progress.console.print(f"[bold]{variant}[/bold] seeds {', '.join(map(str, seeds))}: {how}",
                                        highlight=False)

    def fused_steps(self, variant: str, how: str) -> None:
        if not self.quiet:
            self.progress.console.print(f"[bold]{variant}[/bold] fused steps: {how}", highlight=False)

    def run_done(self, run: RunResult, seconds: float) -> None:
        self.progress.advance(self.study_task)
        if not self.quiet:
            test = f"{run.test_accuracy:.3f}" if run.test_accuracy is not None else "—"
            self.progress.console.print(f"  done in {seconds:.1f}s: train acc {run.train_accuracy:.3f}, "
                                        f"test acc {test}", highlight=False)
