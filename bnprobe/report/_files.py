""":func:`write_outputs` writes ``results.csv``, ``history.csv`` (per-epoch numbers) and ``plots/``
(a PNG and, beside it, a CSV of exactly the numbers drawn) into a study folder; :func:`summary_json`
is the same summary as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bnprobe._common import REFERENCE_VARIANT, safe_filename, write_atomic
from bnprobe.probes import parse_probe_spec
from bnprobe.report._numbers import (
    ACCURACY_METRICS,
    Metrics,
    curve_metrics,
    matrix_metrics,
    metric_stats,
    probe_metrics,
    select_metrics,
)
from bnprobe.report._results import RUN_PROBE, Results
from bnprobe.report._stats import (
    CONFIDENCE,
    PAIRED_METHOD,
    MetricStats,
    stats_csv,
)

PLOT_METRICS: dict[str, tuple[str, ...]] = {"hdbscan": ("ari", "nmi", "n_clusters", "noise_fraction"),
                                            "ablation": ("auc_selective", "auc_random"),
                                            "rank": ("effective_rank", "stable_rank", "pca_fraction_99")}
"""Probe name -> the metrics its default figure shows side by side; other probes show their key metric."""


def summary_json(results: Results, reference: str = REFERENCE_VARIANT) -> dict:
    """The study's summary as plain JSON-safe data (what ``--json`` prints).

    ``probes`` has the shape of ``results.json``'s, one level deeper:
    ``{PROBE: {LAYER: {METRIC: {VARIANT: {"mean", "std", "n", "difference"}}}}}``, every metric of
    every probe, plus the pseudo-probe ``run`` with the accuracies and losses; ``difference`` is
    ``{"estimate", "low", "high", "n", "excludes_zero"}`` from ``reference`` or null.  ``flags`` lists
    every run's flags (:mod:`bnprobe.train._flags`) as ``{"variant", "seed", "name", "message"}``.
    ``mode`` is how the runs came by their weights (``scratch``, ``fine-tune``, ``probe-only``; null
    for given activations).
    """
    probes: dict = {}
    for probe in [RUN_PROBE, *results.probe_keys]:
        for metric in probe_metrics(results, probe):
            for row in metric_stats(results, probe, metric, reference):
                cell = row.summary.to_dict() if row.summary else {"mean": None, "std": None, "n": 0}
                cell["difference"] = row.difference.to_dict() if row.difference else None
                probes.setdefault(probe, {}).setdefault(row.layer, {}).setdefault(metric, {})[row.variant] = cell
    return {"schema_version": results.schema_version, "model": results.model, "dataset": results.dataset,
            "mode": results.mode, "variants": results.variants, "seeds": results.seeds, "layers": results.layers,
            "reference": reference if reference in results.variants else None,
            "confidence": CONFIDENCE, "interval_method": PAIRED_METHOD, "probes": probes,
            "failures": sum(len(run.failures) for run in results.runs),
            "flags": [{"variant": run.variant, "seed": run.seed, **flag} for run in results.runs for flag in run.flags]}


def file_stem(probe: str) -> str:
    """``probe`` as a file name: ``hdbscan(dims=30)`` -> ``hdbscan_dims=30``."""
    return safe_filename(probe).strip("_")


def plot_metrics(results: Results, probe: str, metrics: Metrics = None) -> list[str]:
    """The metrics ``plots/<probe>.png`` shows: ``metrics`` when given, else the probe's entry in
    :data:`PLOT_METRICS`, else its key metric."""
    if metrics is not None:
        return select_metrics(results, probe, metrics)
    available = probe_metrics(results, probe)
    preferred = [m for m in PLOT_METRICS.get(parse_probe_spec(probe)[0], ()) if m in available]
    return preferred or available[:1]


def write_outputs(results: Results, out_dir: str | Path, metrics: Metrics = None,
                  reference: str = REFERENCE_VARIANT) -> list[Path]:
    """Write ``results.csv``, ``history.csv`` and ``plots/*.png`` with a CSV of the plotted numbers beside each PNG.

    ``plots/accuracy.png``: train and test accuracy per variant, as bars.  ``plots/<probe>.png``: one
    panel per metric of :func:`plot_metrics`, by layer; a model-scope probe's (numbers filed under the
    layer ``model`` only) as bars per variant.  ``plots/<probe>_heatmap.png``: a probe's layer-by-layer
    matrix (``cka_matrix``'s) per variant.  ``plots/<probe>_curves.png``: the ablation probe's curves,
    a panel per layer (its CSV also holds each layer's ``channels``, which place the points).  Returns
    the paths written.
    """
    from bnprobe.report._plots import (  # matplotlib only here
        bar_figure,
        curve_points,
        curves_figure,
        matrix_figure,
        png_bytes,
        probe_figure,
    )

    out_dir = Path(out_dir)
    written = [results.save_csv(out_dir), results.save_history_csv(out_dir)]
    study = f"{results.model} on {results.dataset}"

    def rows(probe: str, chosen: Sequence[str]) -> list[MetricStats]:
        return [row for metric in chosen for row in metric_stats(results, probe, metric, reference)]

    def accuracy_figure(stats: list[MetricStats]):
        return bar_figure(stats, study, what="accuracy", ylim=(0, 1.1))

    figures = [("accuracy", accuracy_figure, rows(RUN_PROBE, ACCURACY_METRICS))]
    figures += [(file_stem(probe), lambda stats: probe_figure(stats, study),
                 rows(probe, plot_metrics(results, probe, metrics)))
                for probe in results.probe_keys]
    for probe in results.probe_keys:
        columns = matrix_metrics(results, probe)
        if columns:
            figures.append((f"{file_stem(probe)}_heatmap", lambda stats, c=columns: matrix_figure(stats, c, study),
                            rows(probe, list(columns))))
        curves = rows(probe, curve_metrics(results, probe))
        if curve_points(curves):  # none: every run of the probe failed
            figures.append((f"{file_stem(probe)}_curves", lambda stats: curves_figure(stats, study), curves))
    for stem, draw, stats in figures:
        if not stats:
            continue
        png, csv = out_dir / "plots" / f"{stem}.png", out_dir / "plots" / f"{stem}.csv"
        write_atomic(png, png_bytes(draw(stats)))
        write_atomic(csv, stats_csv(stats))
        written += [png, csv]
    return written
