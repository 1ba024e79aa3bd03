"""Run a list of probes over a capture, isolating failures.

A probe that raises on one layer is recorded as failed for that layer (with its message) and every
other probe and layer goes on: one fragile plugin must not cost a study its other numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bnprobe.capture import CaptureResult
from bnprobe.probes.base import MODEL_SCOPE_LAYER, LayerData, Probe, ProbeContext
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


def run_probes(captured: CaptureResult, probes: Sequence[Probe], context: ProbeContext,
               on_step: Callable[[str, str], None] | None = None) -> ProbeOutcome:
    """Measure every probe on every captured layer (model-scope probes once per run)."""
    outcome = ProbeOutcome()
    for probe in probes:
        targets: list[LayerData | None]
        targets = [None] if probe.scope == "model" else list(captured.layers)
        per_layer = outcome.values.setdefault(probe.key, {})
        for layer in targets:
            layer_name = MODEL_SCOPE_LAYER if layer is None else layer.name
            if on_step is not None:
                on_step(probe.key, layer_name)
            try:
                numbers = probe.measure(layer, context)
                per_layer[layer_name] = {k: finite_or_none(v) for k, v in numbers.items()}
            except Exception as exc:  # isolate: one probe's failure must not end the study
                outcome.failures.append(ProbeFailure(probe.key, layer_name, f"{type(exc).__name__}: {exc}"))
    return outcome
