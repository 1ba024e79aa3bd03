"""Run a list of probes over a capture, isolating failures, optionally in parallel.

A probe that raises on one layer is recorded as failed for that layer (with its message) and every
other probe and layer goes on: one fragile plugin must not cost a study its other numbers.  Once all
are done, :func:`run_probes` raises :class:`ProbeFailedError` naming the failures (or, with
``strict=False``, warns with :class:`ProbeFailureWarning` and returns the numbers); a study, which
files failures in ``results.json`` and shows them in its report, asks only for them to be recorded.
What a probe says about how it measured a layer (:meth:`Probe.notes`, e.g. sparsity's zero test) is
kept beside the numbers, in :attr:`ProbeOutcome.notes`.

The probe context -- model, probed inputs and labels, device, variant, layer modules -- comes from the
capture (:func:`probe_context`): a hand-made one could hold other samples than the captured ones
(a shuffled loader's), another variant, or no layer modules, and the numbers would be wrong without
a word.  A context given anyway must agree with the capture, or it is refused.

With a :class:`bnprobe.probes.pool.ProbePool`, probes that split their work (``prepare`` here,
``conclude`` anywhere) have their ``conclude`` calls run by the pool's workers: :func:`start_probes`
returns as soon as every ``prepare`` is done, and :meth:`PendingOutcome.result` collects the numbers.
The numbers are those of :meth:`Probe.measure` in this process, in the same order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from bnprobe._common import MODEL_SCOPE_LAYER, REFERENCE_VARIANT, describe, finite_or_none, first_line
from bnprobe.capture._capture import CaptureResult
from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.probes._protocol import Probe, ProbeContext
from bnprobe.probes.pool import ProbePool, Unloadable, pack_task, unpack_task

Values = dict[str, dict[str, dict[str, float]]]
"""``{probe key: {layer: {metric: value}}}``"""
Notes = dict[str, dict[str, dict[str, str]]]
"""``{probe key: {layer: {name: text}}}``: what probes said about how they measured (:meth:`Probe.notes`)."""


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
    notes: Notes = field(default_factory=dict)
    """The notes of the layers that have numbers (none for a probe or layer without notes)."""
    sample_sets: list[Values] = field(default_factory=list)
    """Each sample set's own numbers, when the run was probed on several and :attr:`values` holds their
    means (:func:`bnprobe.probes.mean_over_sets`); empty for one set."""


OnFailure = Literal["raise", "warn", "record"]
"""What :meth:`PendingOutcome.result` does when a probe failed: raise :class:`ProbeFailedError`, warn with
:class:`ProbeFailureWarning`, or only record the failures (for a caller that files and shows them)."""
FAILURE_MODES = ("raise", "warn", "record")
SHOWN_FAILURES = 3
"""Failures (and layers of one failure) a message names before it says how many more there are."""


class ProbeFailedError(BnprobeError):
    """Some probe raised on some layer: the message names them, :attr:`outcome` keeps every number."""

    def __init__(self, outcome: ProbeOutcome) -> None:
        self.outcome = outcome
        super().__init__(f"{describe_failures(outcome.failures)}; the other numbers are in this error's .outcome, "
                         "and run_probes(..., strict=False) returns them with a warning")


class ProbeFailureWarning(UserWarning):
    """``run_probes(..., strict=False)``: some probe failed on some layer (see :attr:`ProbeOutcome.failures`)."""


def describe_failures(failures: Sequence[ProbeFailure]) -> str:
    """One line naming the failed probes, their layers and errors (the same error once, with its layers)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for failure in failures:
        error = first_line(failure.error)
        grouped.setdefault((failure.probe, error), []).append(failure.layer)
    parts = []
    for (probe, error), layers in list(grouped.items())[:SHOWN_FAILURES]:
        more = f" and {len(layers) - SHOWN_FAILURES} more" if len(layers) > SHOWN_FAILURES else ""
        parts.append(f"{probe} on {', '.join(layers[:SHOWN_FAILURES])}{more}: {error}")
    if len(grouped) > SHOWN_FAILURES:
        parts.append(f"{len(grouped) - SHOWN_FAILURES} more failures")
    return f"{len(failures)} probe measurement{'s' if len(failures) != 1 else ''} failed: {'; '.join(parts)}"


@dataclass
class _Step:
    """One probe on one layer: its numbers, its failure, or the worker computing them."""

    probe: Probe
    layer: str
    numbers: dict[str, dict[str, float | None]] | None = None
    """``{layer: {metric: value}}``: the step's own layer, or those a model-scope probe filed its numbers under."""
    error: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    captured: Sequence[str] = ()
    """The captured layers' names, under which alone a model-scope probe may file numbers."""
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
            self.numbers = _filed(numbers, self.layer, self.captured)
        except Exception as exc:  # isolate, as in the process
            self.error = describe(exc, full=True)
        self.future, self.task = None, None


class PendingOutcome:
    """The outcome of :func:`start_probes`, some of whose numbers may still be computed by workers."""

    def __init__(self, steps: list[_Step], pool: ProbePool | None, on_failure: OnFailure = "raise") -> None:
        self._steps, self._pool, self._on_failure = steps, pool, on_failure

    def done(self) -> bool:
        """Whether every number is in (so :meth:`result` will not wait)."""
        return all(step.future is None or step.future.done() for step in self._steps)

    def result(self) -> ProbeOutcome:
        """Every probe's numbers and failures, in probe then layer order (waits for the workers).

        Failures raise, warn or are only recorded, as ``start_probes(on_failure=...)`` said.
        """
        outcome = ProbeOutcome()
        for step in self._steps:
            step.settle(self._pool)
            per_layer = outcome.values.setdefault(step.probe.key, {})
            if step.error is not None:
                outcome.failures.append(ProbeFailure(step.probe.key, step.layer, step.error))
            else:
                per_layer.update(step.numbers)
                if step.notes:
                    outcome.notes.setdefault(step.probe.key, {})[step.layer] = step.notes
        if outcome.failures and self._on_failure == "raise":
            raise ProbeFailedError(outcome)
        if outcome.failures and self._on_failure == "warn":
            warnings.warn(describe_failures(outcome.failures), ProbeFailureWarning, stacklevel=3)
        return outcome


def probe_context(captured: CaptureResult, reference: CaptureResult | None = None) -> ProbeContext:
    """The context the probes of ``captured`` run in, all of it from the capture.

    ``reference`` is the capture of the ``bn`` run of the same seed on the same samples, for probes
    that compare with it (cka); it is checked to be one.
    """
    missing = [what for what in ("model", "inputs", "device") if getattr(captured, what) is None]
    if missing:
        raise BnprobeError(f"this CaptureResult does not hold its {', '.join(missing)}; capture with "
                           "bnprobe.capture._capture, or pass a ProbeContext")
    if reference is not None:
        _check_reference(captured, reference)
    return ProbeContext(model=captured.model, inputs=captured.inputs, labels=torch.from_numpy(captured.labels),
                        device=captured.device, variant=captured.variant, seed=captured.seed,
                        layer_modules=dict(captured.modules), reference=reference_lookup(reference),
                        layers=tuple(captured.layers), reference_layers=reference_layers(reference))


def _check_reference(captured: CaptureResult, reference: CaptureResult) -> None:
    """``reference`` must be a ``bn`` capture of the same seed on the same samples, in the same order."""
    if reference.variant != REFERENCE_VARIANT:
        stated = "does not state its variant" if reference.variant is None else f"is of {reference.variant}"
        raise BnprobeError(f"the reference capture {stated}; the reference is the {REFERENCE_VARIANT} run: "
                           f"bnprobe.capture(bn_model, ..., variant='{REFERENCE_VARIANT}')")
    if None not in (captured.seed, reference.seed) and captured.seed != reference.seed:
        raise BnprobeError(f"the reference capture is of seed {reference.seed}, this one of seed {captured.seed}; "
                           "compare runs of the same seed")
    difference = _tensor_difference(reference.inputs, captured.inputs) if None not in (
        reference.inputs, captured.inputs) else _array_difference(reference.labels, captured.labels)
    if difference is not None:
        raise BnprobeError(f"the reference capture was made on other samples than this one ({difference}); "
                           "capture both runs on the same samples in the same order (not a shuffled loader)")


def _tensor_difference(given: torch.Tensor, captured: torch.Tensor) -> str | None:
    """None when ``given`` holds the same values as ``captured`` (NaN matching NaN), else what differs."""
    if given is None:
        return "none given"
    given = torch.as_tensor(given).detach().cpu()
    if given.shape != captured.shape:
        if given.dim() and captured.dim() and len(given) != len(captured):
            return f"{len(given)} samples, {len(captured)} captured"
        return f"shape {tuple(given.shape)}, captured {tuple(captured.shape)}"
    given = given.to(captured.dtype)
    same = given == captured
    if captured.is_floating_point():
        same |= given.isnan() & captured.isnan()
    if bool(same.all()):
        return None
    rows = (~same).reshape(len(same), -1).any(dim=1)
    return f"{int(rows.sum())} of {len(rows)} samples differ, the first at index {int(rows.nonzero()[0, 0])}"


def _array_difference(given: np.ndarray, captured: np.ndarray) -> str | None:
    return _tensor_difference(torch.from_numpy(np.asarray(given)), torch.from_numpy(np.asarray(captured)))


def _check_context(built: ProbeContext, given: ProbeContext) -> None:
    """A context given by hand must say what the capture says: refused, naming what differs, if not."""
    differences = []
    if given.model is not built.model:
        differences.append("model is not the captured model")
    for what in ("inputs", "labels"):
        difference = _tensor_difference(getattr(given, what), getattr(built, what))
        if difference is not None:
            differences.append(f"{what} are not the captured ones ({difference})")
    for what in ("variant", "seed"):
        stated = getattr(built, what)
        if stated is not None and getattr(given, what) != stated:
            differences.append(f"{what} is {getattr(given, what)!r}, the capture's {stated!r}")
    if given.layer_modules.keys() != built.layer_modules.keys() or \
            any(given.layer_modules[name] is not module for name, module in built.layer_modules.items()):
        differences.append(f"layer_modules ({len(given.layer_modules)}) are not the captured layers' modules "
                           f"({len(built.layer_modules)})")
    if differences:
        raise BnprobeError(f"the ProbeContext contradicts the capture: its {'; its '.join(differences)}; "
                           "leave the context out: run_probes(captured, probes) builds it from the capture")


def _context(captured: CaptureResult, context: ProbeContext | None, reference: CaptureResult | None,
             probes: Sequence[Probe], held_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> ProbeContext:
    """The context to probe ``captured`` in: built from it, or the one given once it agrees with it;
    with the ``held_out`` test images and labels when given."""
    if context is not None and reference is not None:
        raise BnprobeError("give the reference capture as reference=..., or a ProbeContext, not both")
    if context is not None and held_out is not None and context.held_out is not None:
        raise BnprobeError("give the held-out images as held_out=..., or in the ProbeContext, not both")
    if context is None:
        context = probe_context(captured, reference)
    elif not any(getattr(captured, what) is None for what in ("model", "inputs", "device")):
        _check_context(probe_context(captured), context)
    if held_out is not None:
        context = replace(context, held_out=held_out)
    if not context.layers:
        context = replace(context, layers=tuple(captured.layers))
    elif [layer.name for layer in context.layers] != captured.names:
        raise BnprobeError("the ProbeContext's layers are not the captured ones; leave them out: the runner "
                           "fills them in from the capture")
    for probe in probes:
        if probe.compares_with_reference:
            context.stated_variant(probe.key)
    return context


def start_probes(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext | None = None,
                 on_step: Callable[[str, str], None] | None = None, pool: ProbePool | None = None, *,
                 reference: CaptureResult | None = None, on_failure: OnFailure = "raise",
                 held_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> PendingOutcome:
    """Measure every probe on every captured layer (model-scope probes once per run), the CPU halves of
    split probes on ``pool``'s workers when it has any; collect the numbers with ``.result()``.

    The probe context comes from ``captured`` (:func:`probe_context`); ``reference`` is the ``bn``
    run's capture for probes that compare with it; ``held_out`` the test images and labels for probes
    that score the model's predictions (ablation).  A ``context`` given by hand must agree with the
    capture (model, inputs, labels, variant, seed, layer modules) and is refused otherwise.
    ``on_failure`` says what ``.result()`` does if a probe failed (:data:`OnFailure`).  With a pool
    this may wait for room in its queue (:class:`bnprobe.probes.pool.ProbePool`).
    """
    if on_failure not in FAILURE_MODES:
        raise BnprobeError(f"on_failure must be one of {', '.join(FAILURE_MODES)}, got {on_failure!r}")
    context = _context(captured, context, reference, probes, held_out)
    steps: list[_Step] = []
    for probe in probes:
        targets: list[LayerData | None]
        targets = [None] if probe.scope == "model" else list(captured.layers)
        for layer in targets:
            step = _Step(probe, MODEL_SCOPE_LAYER if layer is None else layer.name, captured=captured.names)
            steps.append(step)
            if on_step is not None:
                on_step(probe.key, step.layer)
            try:
                if pool is not None and pool.active and probe.splits:
                    prepared = probe.prepare(layer, context)
                    task = pack_task(probe, prepared)
                    step.future = pool.submit(task) if task is not None else None
                    if step.future is None:
                        step.numbers = _filed(probe.conclude(prepared), step.layer, step.captured)
                    else:
                        step.task = task
                    del prepared
                else:
                    step.numbers = _filed(probe.measure(layer, context), step.layer, step.captured)
                step.notes = _noted(probe.notes(layer, context))
            except Exception as exc:  # isolate: one probe's failure must not end the study
                step.error = describe(exc, full=True)
    return PendingOutcome(steps, pool, on_failure)


def run_probes(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext | None = None,
               on_step: Callable[[str, str], None] | None = None, pool: ProbePool | None = None, *,
               reference: CaptureResult | None = None, strict: bool = True,
               held_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> ProbeOutcome:
    """Measure every probe on every captured layer (model-scope probes once per run) and return the numbers.

    Everything the probes need comes from ``captured``; ``reference`` is the ``bn`` run's capture
    (same seed, same samples) for probes that compare with it, such as cka; ``held_out``, the test
    images and labels ``(x, y)`` for probes that score the model's predictions (ablation).  A probe that
    fails on a layer does not stop the others, but then this raises :class:`ProbeFailedError`, which names the
    failures and keeps the numbers in ``.outcome``; ``strict=False`` warns
    (:class:`ProbeFailureWarning`) and returns them.  With ``pool``, the CPU halves of split probes
    run on its workers in parallel.  ``context`` is for contexts built by hand: it must agree with
    the capture (see :func:`start_probes`).
    """
    return start_probes(captured, probes, context, on_step, pool, reference=reference,
                        on_failure="raise" if strict else "warn", held_out=held_out).result()


def reference_lookup(reference: CaptureResult | None) -> Callable[[str], LayerData | None]:
    """``name`` -> that layer of ``reference``, or None (no reference, or no such layer in it)."""
    def find(name: str) -> LayerData | None:
        if reference is None:
            return None
        try:
            return reference[name]
        except KeyError:
            return None
    return find


def reference_layers(reference: CaptureResult | None) -> tuple[LayerData, ...]:
    """Every layer of ``reference`` in forward order (none without a reference)."""
    return () if reference is None else tuple(reference.layers)


def _filed(numbers: Mapping[str, Any], layer: str, captured: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """A probe's numbers as results store them, ``{layer: {metric: value}}`` (NaN and inf as None).

    A model-scope probe (``layer`` is ``model``) may file numbers by layer, ``{layer: {metric: value}}``,
    under layers that were captured; anything else raises.
    """
    if layer == MODEL_SCOPE_LAYER and numbers and all(isinstance(v, Mapping) for v in numbers.values()):
        unknown = [name for name in numbers if name not in captured]
        if unknown:
            raise BnprobeError(f"numbers filed under layer {unknown[0]!r}, which was not captured; "
                               f"captured: {', '.join(captured) or 'none'}")
        return {str(name): _values(per_layer) for name, per_layer in numbers.items()}
    return {layer: _values(numbers)}


def _values(numbers: Mapping[str, Any]) -> dict[str, float | None]:
    return {str(name): finite_or_none(value) for name, value in numbers.items()}


def _noted(notes: dict[str, str]) -> dict[str, str]:
    """A probe's notes as results store them; raises on a name or text that is not a string."""
    wrong = next((name for name, text in notes.items() if not (isinstance(name, str) and isinstance(text, str))), None)
    if wrong is not None:
        raise TypeError(f"notes must map names to strings; {wrong!r}: {notes[wrong]!r} does not")
    return dict(notes)


