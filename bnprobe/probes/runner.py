"""Run a list of probes over a capture, isolating failures, optionally in parallel.

A probe that raises on one layer is recorded as failed for that layer (with its message) and every
other probe and layer goes on: one fragile plugin must not cost a study its other numbers.

With a :class:`bnprobe.probes.pool.ProbePool`, probes that split their work (``prepare`` here,
``conclude`` anywhere) have their ``conclude`` calls run by the pool's workers: :func:`start_probes`
returns as soon as every ``prepare`` is done, and :meth:`PendingOutcome.result` collects the numbers.
The numbers are those of :meth:`Probe.measure` in this process, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from bnprobe.capture import CaptureResult
from bnprobe.errors import BnprobeError
from bnprobe.probes.base import MODEL_SCOPE_LAYER, LayerData, Probe, ProbeContext
from bnprobe.probes.pool import ProbePool, Unloadable, pack_task, unpack_task
from bnprobe.results import finite_or_none

Values = dict[str, dict[str, dict[str, float]]]
"""``{probe key: {layer: {metric: value}}}``"""


@dataclass
class ProbeFailure:
    """One probe that raised on one layer."""

    probe: str
    layer: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"probe": self.probe, "layer": self.layer, "error": self.error}


@dataclass
class ProbeOutcome:
    """Numbers of every probe that worked, and the failures of those that did not."""

    values: Values = field(default_factory=dict)
    failures: list[ProbeFailure] = field(default_factory=list)


@dataclass
class _Step:
    """One probe on one layer: its numbers, its failure, or the worker computing them."""

    probe: Probe
    layer: str
    numbers: dict[str, float | None] | None = None
    error: str | None = None
    future: Future | None = None
    task: bytes | None = None
    """The pickled task a worker concludes, kept to conclude it here if the worker cannot."""

    def settle(self, pool: ProbePool | None) -> None:
        """Wait for the worker, if any, and keep its numbers or its failure."""
        if self.future is None:
            return
        try:
            try:
                numbers = self.future.result()
            except BrokenProcessPool as exc:  # every queued task fails with a dead worker: redo it here
                if pool is not None:
                    pool.stop(f"a probe worker died ({exc})")
                numbers = Unloadable(str(exc))
            if isinstance(numbers, Unloadable):
                probe, prepared = unpack_task(self.task)
                numbers = probe.conclude(prepared)
            self.numbers = _filed(numbers)
        except Exception as exc:  # isolate, as in the process
            self.error = _describe(exc)
        self.future, self.task = None, None


class PendingOutcome:
    """The outcome of :func:`start_probes`, some of whose numbers may still be computed by workers."""

    def __init__(self, steps: list[_Step], pool: ProbePool | None) -> None:
        self._steps, self._pool = steps, pool

    def done(self) -> bool:
        """Whether every number is in (so :meth:`result` will not wait)."""
        return all(step.future is None or step.future.done() for step in self._steps)

    def result(self) -> ProbeOutcome:
        """Every probe's numbers and failures, in probe then layer order (waits for the workers)."""
        outcome = ProbeOutcome()
        for step in self._steps:
            step.settle(self._pool)
            per_layer = outcome.values.setdefault(step.probe.key, {})
            if step.error is not None:
                outcome.failures.append(ProbeFailure(step.probe.key, step.layer, step.error))
            else:
                per_layer[step.layer] = step.numbers
        return outcome


def _check_context(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext) -> None:
    """Probes that read the model compare its inputs with the captured layers sample by sample.

    Other probes never read ``context.inputs``, so a placeholder context is fine for them.
    """
    if not any(probe.needs == "model" for probe in probes):
        return
    for what in ("inputs", "labels"):
        given = getattr(context, what)
        if given is not None and len(given) != len(captured.labels):
            raise BnprobeError(f"ProbeContext.{what} has {len(given)} samples but {len(captured.labels)} were "
                               f"captured; pass the captured samples (capture(..., samples=N) takes the first N)")


def start_probes(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext,
                 on_step: Callable[[str, str], None] | None = None,
                 pool: ProbePool | None = None) -> PendingOutcome:
    """Measure every probe on every captured layer (model-scope probes once per run), the CPU halves of
    split probes on ``pool``'s workers when it has any; collect the numbers with ``.result()``.

    With a pool this may wait for room in its queue (:class:`bnprobe.probes.pool.ProbePool`).
    For probes that read the model, ``context.inputs`` and ``labels`` must be the captured samples.
    """
    _check_context(captured, probes, context)
    steps: list[_Step] = []
    for probe in probes:
        targets: list[LayerData | None]
        targets = [None] if probe.scope == "model" else list(captured.layers)
        for layer in targets:
            step = _Step(probe, MODEL_SCOPE_LAYER if layer is None else layer.name)
            steps.append(step)
            if on_step is not None:
                on_step(probe.key, step.layer)
            try:
                if pool is not None and pool.active and probe.splits:
                    prepared = probe.prepare(layer, context)
                    task = pack_task(probe, prepared)
                    step.future = pool.submit(task) if task is not None else None
                    if step.future is None:
                        step.numbers = _filed(probe.conclude(prepared))
                    else:
                        step.task = task
                    del prepared
                else:
                    step.numbers = _filed(probe.measure(layer, context))
            except Exception as exc:  # isolate: one probe's failure must not end the study
                step.error = _describe(exc)
    return PendingOutcome(steps, pool)


def run_probes(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext,
               on_step: Callable[[str, str], None] | None = None, pool: ProbePool | None = None) -> ProbeOutcome:
    """Measure every probe on every captured layer (model-scope probes once per run) and return the numbers.

    With ``pool``, the CPU halves of split probes run on its workers in parallel.
    """
    return start_probes(captured, probes, context, on_step, pool).result()


def _filed(numbers: dict[str, float]) -> dict[str, float | None]:
    """A probe's numbers as results store them (NaN and inf as None); raises on anything else."""
    return {str(name): finite_or_none(value) for name, value in numbers.items()}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
