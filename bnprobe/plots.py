"""Figures of a study's numbers, drawn from :class:`bnprobe.stats.MetricStats` rows.

The figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas (no
pyplot, no GUI, no global state), at a fixed size so a figure of ``k`` panels is always
``figure_pixels(k)`` pixels:

* :func:`metric_figure` -- one panel per metric: the metric by layer in forward order, one line of
  markers per variant with the standard deviation over seeds as error bars (the layout of Potgieter
  et al.'s channel-sparsity figure).  It takes any probe's rows: sparsity, HDBSCAN's ari, nmi,
  n_clusters and noise_fraction, or a plugin's.
* :func:`accuracy_figure` -- train and test accuracy per variant as bars with error bars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from bnprobe.stats import MetricStats

PANEL_INCHES = (5.0, 3.4)
DPI = 100
MAX_COLUMNS = 2
MAX_TICK_LABELS = 16
"""More layers than this get every k-th name on the x axis, so the names stay readable."""
DODGE = 0.08
"""Horizontal offset between variants at one layer, so their error bars do not hide each other."""


def grid_shape(panels: int) -> tuple[int, int]:
    """``(rows, columns)`` of a figure with ``panels`` panels, at most :data:`MAX_COLUMNS` wide."""
    columns = min(panels, MAX_COLUMNS)
    return math.ceil(panels / columns), columns


def figure_pixels(panels: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a figure with ``panels`` panels."""
    rows, columns = grid_shape(panels)
    return round(columns * PANEL_INCHES[0] * DPI), round(rows * PANEL_INCHES[1] * DPI)


def _figure(panels: int) -> tuple[Figure, list]:
    rows, columns = grid_shape(panels)
    fig = Figure(figsize=(columns * PANEL_INCHES[0], rows * PANEL_INCHES[1]), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _seed_note(rows: Sequence[MetricStats]) -> str:
    most = max((row.summary.n for row in rows if row.summary), default=0)
    return f"mean ± std over {most} seeds" if most > 1 else "1 seed"


def metric_figure(rows: Sequence[MetricStats]) -> Figure:
    """One panel per metric in ``rows`` (non-empty, one probe; in their order): the metric by layer,
    a series per variant."""
    metrics = list(dict.fromkeys(row.metric for row in rows))
    fig, axes = _figure(len(metrics))
    probe = rows[0].probe
    fig.suptitle(f"{probe} ({_seed_note(rows)})")
    for ax, metric in zip(axes, metrics, strict=True):
        mine = [row for row in rows if row.metric == metric]
        layers = list(dict.fromkeys(row.layer for row in mine))
        variants = list(dict.fromkeys(row.variant for row in mine))
        for k, variant in enumerate(variants):
            offset = (k - (len(variants) - 1) / 2) * DODGE
            points = [(layers.index(row.layer) + offset, row.summary) for row in mine
                      if row.variant == variant and row.summary is not None]
            if not points:
                continue
            ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                        yerr=[s.std or 0.0 for _, s in points], marker="o", markersize=4, capsize=3,
                        linewidth=1.2, label=variant)
        step = math.ceil(len(layers) / MAX_TICK_LABELS)
        ax.set_xticks(range(0, len(layers), step), layers[::step], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # no series when every value is null
        axes[0].legend(fontsize=8)
    return fig


def accuracy_figure(rows: Sequence[MetricStats]) -> Figure:
    """Bars per variant, one per metric in ``rows`` (train and test accuracy), std over seeds as error bars."""
    metrics = list(dict.fromkeys(row.metric for row in rows))
    variants = list(dict.fromkeys(row.variant for row in rows))
    fig, (ax,) = _figure(1)
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        by_variant = {row.variant: row.summary for row in rows if row.metric == metric}
        summaries = [by_variant.get(variant) for variant in variants]
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(variants))]
        bars = ax.bar(xs, [s.mean if s else math.nan for s in summaries], width,
                      yerr=[(s.std or 0.0) if s else 0.0 for s in summaries], capsize=3,
                      label=metric.replace("_", " "))
        ax.bar_label(bars, labels=[f"{s.mean:.3f}" if s else "" for s in summaries], fontsize=7, padding=2)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy ({_seed_note(rows)})", fontsize=10)
    fig.legend(fontsize=8, loc="outside lower center", ncols=len(metrics))
    return fig


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, ready for :func:`bnprobe.results.write_atomic`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
