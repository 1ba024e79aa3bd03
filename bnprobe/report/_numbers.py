"""The numbers behind every report: per probe, layer, metric and variant, the mean ± sample standard
deviation over seeds and the difference from the ``bn`` reference, paired by seed, with its 95%
Student t interval (:func:`metric_stats`; the statistics are :mod:`bnprobe.report._stats`'s), and
which probes, layers and metrics a results file holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bnprobe._common import MODEL_SCOPE_LAYER, REFERENCE_VARIANT
from bnprobe.errors import BnprobeError
from bnprobe.probes import Probe, list_probes, parse_probe_spec
from bnprobe.probes.metrics import declared
from bnprobe.report._results import RUN_PROBE, Results
from bnprobe.report._stats import (
    MetricStats,
    paired_difference,
    summarise,
)

Metrics = Sequence[str] | Literal["all"] | None
"""Which metrics to show: None for each probe's key metric, ``"all"``, or a list of names."""

ACCURACY_METRICS = ("train_accuracy", "test_accuracy")
SHOWN_LAYERS = 3
"""Layers a note line names for one text before it says how many more hold it."""


def seed_values(results: Results, probe: str, layer: str, metric: str, variant: str) -> dict[int, float | None]:
    """``{seed: value}`` of ``metric`` for ``probe`` at ``layer`` in every run of ``variant``."""
    return {run.seed: run.numbers().get(probe, {}).get(layer, {}).get(metric)
            for run in results.runs if run.variant == variant}


def probe_layers(results: Results, probe: str) -> list[str]:
    """Layers that ``probe`` has numbers for, in forward order (``model`` scope first)."""
    present = {layer for run in results.runs for layer in run.numbers().get(probe, {})}
    ordered = [MODEL_SCOPE_LAYER] if MODEL_SCOPE_LAYER in present else []
    ordered += [layer for layer in results.layers if layer in present]
    ordered += sorted(present - set(ordered))
    return ordered


def probe_metrics(results: Results, probe: str) -> list[str]:
    """Every metric ``probe`` reported, its declared key metric first, then in the order first seen."""
    seen = list(dict.fromkeys(m for run in results.runs for layer in run.numbers().get(probe, {}).values()
                              for m in layer))
    cls = _probe_class(probe)
    key = cls.key_metric if cls is not None else None
    if key in seen:
        return [key, *(m for m in seen if m != key)]
    return seen


def _probe_class(probe: str) -> type[Probe] | None:
    """The registered class of the probe whose key is ``probe`` (``hdbscan(dims=30)``: hdbscan's), or None."""
    return {info.name: info.cls for info in list_probes()}.get(parse_probe_spec(probe)[0])


def matrix_metrics(results: Results, probe: str) -> dict[str, str]:
    """``{metric: bn layer}`` of the metrics that form ``probe``'s layer-by-layer matrix, in the ``bn``
    run's layer order; empty for a probe that declares none (:attr:`bnprobe.probes.Probe.layer_matrix`)."""
    cls = _probe_class(probe)
    prefix = cls.layer_matrix if cls is not None else ""
    if not prefix:
        return {}
    columns = {m: m[len(prefix):] for m in probe_metrics(results, probe) if m.startswith(prefix)}
    order = {layer: i for i, layer in enumerate(results.layers)}
    return dict(sorted(columns.items(), key=lambda item: order.get(item[1], len(order))))


CURVE_PREFIXES = ("accuracy_selective_", "accuracy_random_")
"""The ablation probe's curve points: ``accuracy_selective_<fraction>`` and ``accuracy_random_<fraction>``."""
CURVE_PROBE = "ablation"
"""The probe whose curves :func:`curve_metrics` picks out (``plots/<probe>_curves.png``)."""


def curve_fraction(metric: str) -> tuple[str, float] | None:
    """``("selective", 0.25)`` for ``accuracy_selective_0.25`` (``"random"`` for the random order), else None."""
    for prefix in CURVE_PREFIXES:
        if metric.startswith(prefix):
            try:
                return prefix[len("accuracy_"):-1], float(metric[len(prefix):])
            except ValueError:
                return None
    return None


def curve_metrics(results: Results, probe: str) -> list[str]:
    """The metrics behind ``probe``'s ablation curves: every ``accuracy_selective_<f>`` and
    ``accuracy_random_<f>`` by fraction, then ``channels`` (where each point lies); empty for a probe that
    is not the ablation probe, or has no curve points."""
    if parse_probe_spec(probe)[0] != CURVE_PROBE:
        return []
    available = probe_metrics(results, probe)
    points = sorted((m for m in available if curve_fraction(m) is not None),
                    key=lambda m: (curve_fraction(m)[1], curve_fraction(m)[0] != "selective"))
    return [*points, "channels"] if points and "channels" in available else points


def key_metric(results: Results, probe: str) -> str | None:
    """The metric shown for ``probe`` by default: its declared key metric, else the first one reported."""
    metrics = probe_metrics(results, probe)
    return metrics[0] if metrics else None


def select_metrics(results: Results, probe: str, metrics: Metrics) -> list[str]:
    """The metrics of ``probe`` that ``metrics`` (see :data:`Metrics`) asks for, in the probe's order."""
    available = probe_metrics(results, probe)
    if metrics is None:
        return available[:1]
    if metrics == "all":
        return available
    return [m for m in available if m in metrics]


def metric_stats(results: Results, probe: str, metric: str, reference: str = REFERENCE_VARIANT) -> list[MetricStats]:
    """Summary and difference from ``reference`` of ``metric`` for every layer (forward order) and variant."""
    has_reference = reference in results.variants
    rows = []
    for layer in probe_layers(results, probe):
        ref = seed_values(results, probe, layer, metric, reference) if has_reference else {}
        for variant in results.variants:
            values = seed_values(results, probe, layer, metric, variant)
            difference = paired_difference(values, ref) if variant != reference and has_reference else None
            rows.append(MetricStats(probe, layer, metric, variant, summarise(values.values()), difference))
    return rows


def all_zero_line(results: Results, probe: str, metric: str) -> str | None:
    """The line shown instead of ``metric``'s table when every value of it is 0, else None.

    A column of zeros reads as a finding; the line says that nothing counted, and what the metric
    counts (its declared definition), which is why: e.g. sparsity at layers without exact zeros.
    """
    cells = [(run.variant, run.seed, layer, numbers[metric]) for run in results.runs
             for layer, numbers in run.numbers().get(probe, {}).items() if numbers.get(metric) is not None]
    if not cells or any(value != 0 for *_, value in cells):
        return None
    layers, runs = len({cell[2] for cell in cells}), len({cell[:2] for cell in cells})
    line = (f"{probe} — {metric}: every value is 0, at {layers} layer{'s' * (layers != 1)} in "
            f"{runs} run{'s' * (runs != 1)}; no table")
    cls = _probe_class(probe)
    name = declared(cls.metrics, metric) if cls is not None else None
    return f"{line}. {metric}: {cls.metrics[name].definition}" if name is not None else line


def note_lines(results: Results, probe: str) -> list[str]:
    """One line per note of ``probe`` (:attr:`RunResult.notes`): each text and the layers it holds at,
    e.g. ``zero test: a <= 0 (silu) at every layer``."""
    layers = probe_layers(results, probe)
    found: dict[str, dict[str, list[str]]] = {}
    for layer in layers:
        for run in results.runs:
            for name, text in run.notes.get(probe, {}).get(layer, {}).items():
                held = found.setdefault(name, {}).setdefault(text, [])
                if layer not in held:
                    held.append(layer)
    lines = []
    for name, texts in found.items():
        parts = []
        for text, held in texts.items():
            more = len(held) - SHOWN_LAYERS
            where = "every layer" if len(held) == len(layers) > 1 else \
                ", ".join(held[:SHOWN_LAYERS]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{text} at {where}")
        lines.append(f"{name.replace('_', ' ')}: {'; '.join(parts)}")
    return lines


def check_metrics(results: Results, metrics: Metrics) -> None:
    """Fail with the names on offer when none of the requested ``metrics`` exists in any probe."""
    if metrics is None or metrics == "all":
        return
    probes = [RUN_PROBE, *results.probe_keys]
    if not any(select_metrics(results, probe, metrics) for probe in probes):
        names = sorted({m for probe in probes for m in probe_metrics(results, probe)})
        raise BnprobeError(f"no metric named {', '.join(metrics)} in these results; metrics: {', '.join(names)}")
