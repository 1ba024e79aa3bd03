"""Figures of a study's numbers, drawn from :class:`bnprobe.report._stats.MetricStats` rows.

The figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas (no
pyplot, no GUI, no global state), sized by :func:`figure_inches` from the number of panels and of
layers, so that nothing a reader needs is dropped:

* :func:`metric_figure` -- one panel per metric: the metric by layer in forward order, one line of
  markers per variant with the standard deviation over seeds as error bars (the layout of Potgieter
  et al.'s channel-sparsity figure).  It takes any layer-scope probe's rows: sparsity, HDBSCAN's
  ari, nmi, n_clusters and noise_fraction, or a plugin's.  Every layer is named on the x axis,
  side by side when the names fit, else written upwards; past :data:`LAYERS_PER_PANEL` layers the
  panel widens by :data:`LAYER_INCHES` a layer (one panel a row), however deep the model, so the
  names never overlap.
* :func:`bar_figure` -- bars per variant with error bars, a group of bars per metric: train and test
  accuracy, and the numbers of a model-scope probe (e.g. ``attribution``, filed under the layer
  ``model``), which have no layer axis.
* :func:`probe_figure` -- whichever of the two fits a probe's rows.
* :func:`curves_figure` -- the ablation probe's curves, a panel per layer: held-out test accuracy
  against the fraction of the layer's channels zeroed, a colour per variant (the mean over seeds, a
  ± std band), the most class-selective channels first solid, random order dashed.
* :func:`heatmap_figure` -- matrices side by side, a panel each, on one colour scale: a probe's
  layer-by-layer matrix per variant (:func:`matrix_figure`, ``cka_matrix``'s), or any matrix.

Each title names the probe, the model and the dataset, wrapped to the figure's width.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bnprobe._common import MODEL_SCOPE_LAYER, REFERENCE_VARIANT
from bnprobe._hints import option
from bnprobe.errors import BnprobeError
from bnprobe.report._results import RUN_PROBE, Results
from bnprobe.report._stats import MetricStats

PANEL_INCHES = (5.0, 3.4)
DPI = 100
MAX_COLUMNS = 2
LAYERS_PER_PANEL = 28
"""Layers that fit, each named, on a panel of the default width; a deeper model widens its panels."""
LAYER_INCHES = 0.15
"""x-axis room per layer on a widened panel: a 7-point name written upwards is about 0.1 inch wide."""
PANEL_MARGIN_INCHES = 1.0
"""Room on a panel besides its x axis (the y axis's labels and ticks)."""
TICK_FONT = 7
LABEL_CHAR_INCHES = 0.06
"""Width of a character of a 7-point tick label (an upper bound), for the room below the axis."""
LABEL_ROOM_INCHES = 0.3
"""Length of upward tick label that :data:`PANEL_INCHES` has room for; longer names make the panel taller."""
LABEL_GAP_INCHES = 0.15
"""Least space between two names written side by side."""
TITLE_FONT = 11
TITLE_CHAR_INCHES = 0.09
"""Width of a character of the title (an upper bound), to wrap it inside the figure."""
TITLE_LINE_INCHES = 0.22
"""Height of a line of the title: a title of several lines makes the figure taller."""
DODGE = 0.08
"""Horizontal offset between variants at one layer, so their error bars do not hide each other."""
CELL_INCHES = 0.28
"""Side of a heatmap cell; a matrix of a few layers still gets a panel of :data:`PANEL_INCHES`' height."""
ANNOTATED_CELLS = 12
"""Matrices of at most this many rows and columns have each cell's value written in it."""
CURVE_PANEL_INCHES = (3.2, 2.5)
"""A panel of :func:`curves_figure`: one layer's curves, smaller than a metric's panel (a panel per layer)."""
CURVE_COLUMNS = 4
"""Panels a row of :func:`curves_figure`."""
CURVE_LEGEND_INCHES = 0.7
"""Room of :func:`curves_figure` for its legend and the axis names shared by the panels."""
CURVE_ORDERS = (("selective", "most selective first", "-"), ("random", "random order", "--"))
"""The ablation orders: name in the metric, legend entry, line style."""
CURVE_TITLE_CHAR_INCHES = 0.07
"""Width of a character of a panel's 8-point title (its layer), to wrap a long name inside the panel."""
BAND_ALPHA = 0.15
"""Opacity of the ± std band around a curve."""


def grid_shape(panels: int, layers: int = 0) -> tuple[int, int]:
    """``(rows, columns)`` of a figure with ``panels`` panels: at most :data:`MAX_COLUMNS` wide, one
    panel a row once ``layers`` widen the panels."""
    columns = min(panels, MAX_COLUMNS if layers <= LAYERS_PER_PANEL else 1)
    return math.ceil(panels / columns), columns


def _panel_width(layers: Sequence[str]) -> float:
    return max(PANEL_INCHES[0], len(layers) * LAYER_INCHES + PANEL_MARGIN_INCHES)


def upright_labels(layers: Sequence[str]) -> bool:
    """Whether the names of ``layers`` fit side by side under a panel's x axis (else they are written upwards)."""
    longest = max((len(name) for name in layers), default=0) * LABEL_CHAR_INCHES
    return len(layers) * (longest + LABEL_GAP_INCHES) <= _panel_width(layers) - PANEL_MARGIN_INCHES


def title_lines(text: str, width_inches: float) -> list[str]:
    """``text`` wrapped to a figure ``width_inches`` wide (long probe keys and model names broken too)."""
    return textwrap.wrap(text, max(20, int(width_inches / TITLE_CHAR_INCHES)), break_on_hyphens=False)


def figure_inches(panels: int, layers: Sequence[str] = (), title: str = "") -> tuple[float, float]:
    """``(width, height)`` in inches of a figure with ``panels`` panels whose x axes name ``layers``.

    A panel is :data:`PANEL_INCHES`, wider by :data:`LAYER_INCHES` a layer past
    :data:`LAYERS_PER_PANEL` and, when the names are written upwards, taller by the length of the
    longest name past :data:`LABEL_ROOM_INCHES`; a ``title`` of more than one line adds its lines.
    """
    rows, columns = grid_shape(panels, len(layers))
    longest = max((len(name) for name in layers), default=0) * LABEL_CHAR_INCHES
    extra = 0.0 if upright_labels(layers) else max(0.0, longest - LABEL_ROOM_INCHES)
    width = columns * _panel_width(layers)
    lines = max(1, len(title_lines(title, width)))
    return width, rows * (PANEL_INCHES[1] + extra) + (lines - 1) * TITLE_LINE_INCHES


def figure_pixels(panels: int, layers: Sequence[str] = (), title: str = "") -> tuple[int, int]:
    """``(width, height)`` in pixels of :func:`figure_inches`."""
    width, height = figure_inches(panels, layers, title)
    return round(width * DPI), round(height * DPI)


def _figure(panels: int, title: str, layers: Sequence[str] = ()) -> tuple[Figure, list]:
    """A figure of ``panels`` panels (see :func:`figure_inches`) under ``title``, never clipped."""
    rows, columns = grid_shape(panels, len(layers))
    fig = Figure(figsize=figure_inches(panels, layers, title), dpi=DPI, layout="constrained")
    fig.suptitle("\n".join(title_lines(title, fig.get_figwidth())), fontsize=TITLE_FONT)
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _seed_note(rows: Sequence[MetricStats], drawn: str = "mean ± std") -> str:
    most = max((row.summary.n for row in rows if row.summary), default=0)
    return f"{drawn} over {most} seeds" if most > 1 else "1 seed"


def _title(what: str, study: str, rows: Sequence[MetricStats], drawn: str = "mean ± std") -> str:
    """``hdbscan — resnet18 on cifar10 (mean ± std over 3 seeds)``; ``drawn`` says what the figure shows."""
    return f"{what}{f' — {study}' if study else ''} ({_seed_note(rows, drawn)})"


def _legend(fig: Figure, ax, entries: int) -> None:
    """The legend of ``ax``'s series below the panels (not over the data), at most four a row."""
    if ax.get_legend_handles_labels()[0]:  # no series when every value is null
        fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=min(entries, 4))


def _short(value: float) -> str:
    """A bar's label: three decimals, or three significant digits for very small or large numbers."""
    return f"{value:.3f}" if value == 0 or 0.01 <= abs(value) < 1000 else f"{value:.2e}"


def metric_figure(rows: Sequence[MetricStats], study: str = "") -> Figure:
    """One panel per metric in ``rows`` (non-empty, one probe; in their order): the metric by layer,
    a series per variant; ``study`` (``"resnet18 on cifar10"``) goes into the title."""
    metrics = list(dict.fromkeys(row.metric for row in rows))
    layers = list(dict.fromkeys(row.layer for row in rows))
    variants = list(dict.fromkeys(row.variant for row in rows))
    fig, axes = _figure(len(metrics), _title(rows[0].probe, study, rows), layers)
    upright = upright_labels(layers)
    for ax, metric in zip(axes, metrics, strict=True):
        mine = [row for row in rows if row.metric == metric]
        for k, variant in enumerate(variants):
            offset = (k - (len(variants) - 1) / 2) * DODGE
            points = [(layers.index(row.layer) + offset, row.summary) for row in mine
                      if row.variant == variant and row.summary is not None]
            if not points:
                continue
            ax.errorbar([x for x, _ in points], [s.mean for _, s in points],
                        yerr=[s.std or 0.0 for _, s in points], marker="o", markersize=4, capsize=3,
                        linewidth=1.2, label=variant, color=f"C{k}")
        ax.set_xticks(range(len(layers)), layers, rotation=0 if upright else 90, fontsize=TICK_FONT)
        ax.set_xlim(-0.5, len(layers) - 0.5)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes[0], len(variants))
    return fig


def bar_figure(rows: Sequence[MetricStats], study: str = "", what: str = "", ylim: tuple[float, float] | None = None,
               ) -> Figure:
    """Bars per variant (the x axis), a bar per metric in ``rows`` side by side, std over seeds as error
    bars, the mean written on each bar.

    For numbers without a layer axis: train and test accuracy, a model-scope probe's metrics.
    ``what`` (default: the probe's key) and ``study`` go into the title; ``ylim`` fixes the y range.
    """
    metrics = list(dict.fromkeys(row.metric for row in rows))
    variants = list(dict.fromkeys(row.variant for row in rows))
    fig, (ax,) = _figure(1, _title(what or rows[0].probe, study, rows))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        by_variant = {row.variant: row.summary for row in rows if row.metric == metric}
        summaries = [by_variant.get(variant) for variant in variants]
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(variants))]
        ax.bar(xs, [s.mean if s else math.nan for s in summaries], width,
                      yerr=[(s.std or 0.0) if s else 0.0 for s in summaries], capsize=3,
                      label=metric.replace("_", " "))
        for x, summary in zip(xs, summaries, strict=True):
            if summary is not None:  # above the error bar, not on it
                ax.annotate(_short(summary.mean), (x, summary.mean + (summary.std or 0.0)), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_xlabel("variant")
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        ax.margins(y=0.12)  # room for the labels above the error bars
    ax.set_ylabel(metrics[0] if len(metrics) == 1 else what or "value")
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, ax, len(metrics))
    return fig


def probe_figure(rows: Sequence[MetricStats], study: str = "") -> Figure:
    """A probe's figure: :func:`bar_figure` for a model-scope probe (every row at the layer ``model``),
    else :func:`metric_figure`."""
    if all(row.layer == MODEL_SCOPE_LAYER for row in rows):
        return bar_figure(rows, study)
    return metric_figure(rows, study)


def curves_inches(layers: int, title: str = "") -> tuple[float, float]:
    """``(width, height)`` in inches of :func:`curves_figure` with a panel for each of ``layers`` layers."""
    columns = max(1, min(layers, CURVE_COLUMNS))
    rows = max(1, math.ceil(layers / columns))
    width = columns * CURVE_PANEL_INCHES[0]
    lines = max(1, len(title_lines(title, width)))
    return width, rows * CURVE_PANEL_INCHES[1] + CURVE_LEGEND_INCHES + (lines - 1) * TITLE_LINE_INCHES


def curve_points(rows: Sequence[MetricStats]) -> dict[tuple[str, str, str], list[tuple[float, float, float]]]:
    """``{(layer, variant, order): [(fraction zeroed, mean, std), ...]}`` from the ablation probe's ``rows``
    (``order``: ``selective`` or ``random``): each fraction ``f`` at ``round(f * C) / C``, ``C`` the
    layer's ``channels`` (``f`` itself without them); points without a finite mean left out, a std of
    one seed 0."""
    from bnprobe.probes._ablation import ablated_count
    from bnprobe.report._numbers import curve_fraction

    channels = {(row.layer, row.variant): round(row.summary.mean) for row in rows
                if row.metric == "channels" and row.summary is not None and row.summary.mean >= 1}
    points: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        parsed = curve_fraction(row.metric)
        if parsed is None or row.summary is None or not math.isfinite(row.summary.mean):
            continue
        order, fraction = parsed
        count = channels.get((row.layer, row.variant))
        x = ablated_count(fraction, count) / count if count else fraction
        std = row.summary.std if row.summary.std is not None and math.isfinite(row.summary.std) else 0.0
        points.setdefault((row.layer, row.variant, order), []).append((x, row.summary.mean, std))
    return {key: sorted(value) for key, value in points.items()}


def curves_figure(rows: Sequence[MetricStats], study: str = "") -> Figure:
    """The ablation probe's curves from its ``rows`` (those of
    :func:`bnprobe.report._numbers.curve_metrics`): a panel per layer (forward order) with held-out
    test accuracy against the fraction of the layer's channels zeroed, ``round(f * C) / C`` with ``C``
    its ``channels``; a colour per variant, the mean over seeds with a ± std band, the selectivity order
    solid and the random order (the mean over the orders) dashed.  A layer without a point is left out."""
    variants = list(dict.fromkeys(row.variant for row in rows))
    points = curve_points(rows)
    drawn = {layer for layer, _, _ in points}
    layers = [layer for layer in dict.fromkeys(row.layer for row in rows) if layer in drawn]
    if not layers:
        raise BnprobeError(f"probe {rows[0].probe if rows else 'ablation'} has no accuracy_selective_<fraction> or "
                           "accuracy_random_<fraction> numbers to draw curves of")
    title = _title(f"{rows[0].probe}: test accuracy as a layer's channels are zeroed", study, rows)
    width, height = curves_inches(len(layers), title)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.suptitle("\n".join(title_lines(title, width)), fontsize=TITLE_FONT)
    columns = max(1, min(len(layers), CURVE_COLUMNS))
    axes = fig.subplots(math.ceil(len(layers) / columns), columns, squeeze=False, sharey=True).ravel()
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    for i, (ax, layer) in enumerate(zip(axes, layers, strict=False)):
        for k, variant in enumerate(variants):
            for order, label, style in CURVE_ORDERS:
                mine = points.get((layer, variant, order))
                if not mine:
                    continue
                xs, means, stds = (np.array(column) for column in zip(*mine, strict=True))
                ax.plot(xs, means, linestyle=style, marker="o", markersize=3, linewidth=1.2, color=f"C{k}",
                        label=f"{variant}, {label}")
                if stds.any():
                    ax.fill_between(xs, means - stds, means + stds, color=f"C{k}", alpha=BAND_ALPHA, linewidth=0)
        wrapped = textwrap.wrap(layer, max(12, int(CURVE_PANEL_INCHES[0] / CURVE_TITLE_CHAR_INCHES)))
        ax.set_title("\n".join(wrapped), fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "0.25", "0.5", "0.75", "1"])
        ax.tick_params(labelsize=TICK_FONT)
        if i + columns < len(layers):  # a panel below names the axis
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel("fraction of channels zeroed", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    fig.supylabel("held-out test accuracy", fontsize=9)
    handles = [Line2D([], [], color=f"C{k}", linewidth=2, label=variant) for k, variant in enumerate(variants)]
    handles += [Line2D([], [], color="0.3", linestyle=style, label=label) for _, label, style in CURVE_ORDERS]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=min(len(handles), 5))
    return fig


def heatmap_figure(panels: Mapping[str, np.ndarray], rows: Sequence[str], columns: Sequence[str], title: str = "",
                   row_axis: str = "layer", column_axis: str = "layer", value: str = "value") -> Figure:
    """One heatmap per entry of ``panels`` (``{panel title: (len(rows), len(columns)) array}``), side by
    side on one colour scale (the values' range, NaN drawn blank), every row and column named."""
    longest = max((len(name) for name in [*rows, *columns]), default=0) * LABEL_CHAR_INCHES
    side = max(PANEL_INCHES[1], CELL_INCHES * max(len(rows), len(columns)))
    width = len(panels) * (side + longest + PANEL_MARGIN_INCHES) + 1.0
    lines = title_lines(title, width)
    fig = Figure(figsize=(width, side + longest + 1.2 + (max(1, len(lines)) - 1) * TITLE_LINE_INCHES), dpi=DPI,
                 layout="constrained")
    fig.suptitle("\n".join(lines), fontsize=TITLE_FONT)
    matrices = [np.asarray(m, dtype=float) for m in panels.values()]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices]) if matrices else np.array([])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    image = None
    for ax, name, matrix in zip(axes, panels, matrices, strict=True):
        image = ax.imshow(np.ma.masked_invalid(matrix), vmin=low, vmax=high if high > low else low + 1,
                          cmap="viridis", aspect="equal")
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=TICK_FONT)
        ax.set_yticks(range(len(rows)), rows, fontsize=TICK_FONT)
        ax.set_xlabel(column_axis)
        ax.set_ylabel(row_axis)
        ax.set_title(name, fontsize=10)
        if max(len(rows), len(columns)) <= ANNOTATED_CELLS:
            for (i, j), cell in np.ndenumerate(matrix):
                if np.isfinite(cell):
                    ax.text(j, i, f"{cell:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if cell > (low + high) / 2 else "white")
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), label=value, shrink=0.8)
    return fig


def matrix_figure(rows: Sequence[MetricStats], columns: Mapping[str, str], study: str = "") -> Figure:
    """A probe's layer-by-layer matrix (``columns``: ``{metric: bn layer}``, see
    :func:`bnprobe.report._numbers.matrix_metrics`) as a heatmap per variant, each cell the mean over seeds."""
    layers = list(dict.fromkeys(row.layer for row in rows))
    variants = list(dict.fromkeys(row.variant for row in rows))
    metrics = list(columns)
    panels = {variant: np.full((len(layers), len(metrics)), np.nan) for variant in variants}
    for row in rows:
        if row.summary is not None and row.metric in columns:
            panels[row.variant][layers.index(row.layer), metrics.index(row.metric)] = row.summary.mean
    return heatmap_figure(panels, layers, list(columns.values()), _title(rows[0].probe, study, rows, "mean"),
                          row_axis="layer of the variant", column_axis=f"layer of {REFERENCE_VARIANT}",
                          value=f"{rows[0].probe} (mean)")


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, ready for :func:`bnprobe.report._results.write_atomic`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot(results: Results, probe: str, metric: str | None = None, reference: str = REFERENCE_VARIANT) -> Figure:
    """``metric`` of ``probe`` (default: its key metric) by layer, a series per variant with the std over
    seeds -- or bars per variant for a model-scope probe and for ``probe="run"`` (the accuracies) -- as
    the study's ``plots/`` draws it.  Returns the matplotlib Figure, to show in a notebook or save."""
    from bnprobe.report._numbers import key_metric, metric_stats, probe_metrics

    known = [RUN_PROBE, *results.probe_keys]
    if probe not in known:
        raise BnprobeError(f"no probe {probe!r} in these results; probes: {', '.join(known)}")
    metric = metric or key_metric(results, probe)
    rows = metric_stats(results, probe, metric, reference) if metric in probe_metrics(results, probe) else []
    if not rows:
        raise BnprobeError(f"probe {probe} has no numbers for metric {metric!r}; metrics: "
                           f"{', '.join(probe_metrics(results, probe)) or 'none'}")
    return probe_figure(rows, f"{results.model} on {results.dataset}")


def heatmap(results: Results, probe: str, reference: str = REFERENCE_VARIANT) -> Figure:
    """``probe``'s layer-by-layer matrix (``cka_matrix``'s: every layer of each variant against every
    layer of ``bn``) as a heatmap per variant, the mean over seeds, as ``plots/<probe>_heatmap.png``
    draws it.  Returns the matplotlib Figure."""
    from bnprobe.report._numbers import matrix_metrics, metric_stats

    if probe not in results.probe_keys:
        raise BnprobeError(f"no probe {probe!r} in these results; probes: {', '.join(results.probe_keys) or 'none'}")
    columns = matrix_metrics(results, probe)
    if not columns:
        raise BnprobeError(f"probe {probe} has no layer-by-layer matrix to draw; cka_matrix has one "
                           f"(a study run with {option('probes', ['cka_matrix'])})")
    rows = [row for metric in columns for row in metric_stats(results, probe, metric, reference)]
    return matrix_figure(rows, columns, f"{results.model} on {results.dataset}")


def ablation_curves(results: Results, probe: str | None = None, reference: str = REFERENCE_VARIANT) -> Figure:
    """The ablation probe's curves (:func:`curves_figure`): for each layer, held-out test accuracy
    against the fraction of its channels zeroed, a line per variant (mean over seeds, ± std band), the
    most class-selective first solid and random order dashed -- as ``plots/<probe>_curves.png`` draws it.
    ``probe``: the ablation probe's key, needed only when the study ran it with two settings.  Returns
    the matplotlib Figure."""
    from bnprobe.probes import parse_probe_spec
    from bnprobe.report._numbers import CURVE_PROBE, curve_metrics, metric_stats

    keys = [key for key in results.probe_keys if parse_probe_spec(key)[0] == CURVE_PROBE]
    hint = f"a study run with {option('probes', [CURVE_PROBE])} has them"
    if probe is None:
        if not keys:
            raise BnprobeError(f"no {CURVE_PROBE} probe in these results to draw curves of; probes: "
                               f"{', '.join(results.probe_keys) or 'none'} ({hint})")
        if len(keys) > 1:
            raise BnprobeError(f"these results have {len(keys)} {CURVE_PROBE} probes; name one: "
                               f"ablation_curves(results, probe=...) with one of {', '.join(keys)}")
        probe = keys[0]
    if probe not in results.probe_keys:
        raise BnprobeError(f"no probe {probe!r} in these results; probes: {', '.join(results.probe_keys) or 'none'}")
    if probe not in keys:
        raise BnprobeError(f"probe {probe} has no ablation curves, only the {CURVE_PROBE} probe has them "
                           f"({', '.join(keys) or hint})")
    metrics = curve_metrics(results, probe)
    rows = [row for metric in metrics for row in metric_stats(results, probe, metric, reference)]
    return curves_figure(rows, f"{results.model} on {results.dataset}")
