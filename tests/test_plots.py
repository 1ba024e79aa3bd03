"""The figures' layout: every layer named without overlaps, titles inside the figure, bars for model scope.

The checks read the laid-out figure (the bounding boxes matplotlib drew), so a label that is
dropped, clipped or drawn over its neighbour fails them.
"""

import matplotlib.image as mpimg
import pytest
from matplotlib.container import BarContainer

from bnprobe.report import Results, RunResult, metric_stats, write_outputs
from bnprobe.report import _plots as plots
from bnprobe.report._plots import figure_pixels, metric_figure, probe_figure
from bnprobe.report._stats import MetricStats, Summary

VARIANTS = ("bn", "identity", "groupnorm")
RESNET18 = ["relu"] + [f"layer{a}.{b}.relu#{c}" for a in range(1, 5) for b in range(2) for c in range(2)]
DEEP = [f"stages.{i // 15}.blocks.{i % 15}.conv_pw.act" for i in range(60)]
LONG_KEY = "hdbscan(dims=30,min_cluster_size=20)"
LONG_MODEL = "vit_small_patch16_224.augreg_in21k_ft_in1k"


def _rows(probe: str, layers: list[str], metrics: tuple[str, ...] = ("ari",)) -> list[MetricStats]:
    return [MetricStats(probe, layer, metric, variant, Summary(0.1 * k + i / len(layers), 0.05, 3), None)
            for metric in metrics for i, layer in enumerate(layers) for k, variant in enumerate(VARIANTS)]


def _laid_out(fig):
    fig.draw_without_rendering()
    return fig, fig.get_window_extent()


def _inside(box, frame) -> bool:
    return (frame.x0 - 0.5 <= box.x0 and box.x1 <= frame.x1 + 0.5
            and frame.y0 - 0.5 <= box.y0 and box.y1 <= frame.y1 + 0.5)


@pytest.mark.parametrize("layers", [RESNET18[:4], RESNET18, DEEP], ids=["4", "17", "60"])
@pytest.mark.parametrize("metrics", [("ari",), ("ari", "nmi", "n_clusters", "noise_fraction")], ids=["1", "4"])
def test_every_layer_is_named_without_overlap_inside_the_figure(layers, metrics):
    fig, frame = _laid_out(metric_figure(_rows("hdbscan", layers, metrics), f"{LONG_MODEL} on cifar10"))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(metrics)
    for ax in panels:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert [t.get_text() for t in labels] == layers
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:], strict=False))  # no two names overlap
        assert all(_inside(box, frame) for box in boxes)
        for other in panels:  # nor run into the panel below
            if other is not ax:
                assert not any(box.overlaps(other.get_window_extent()) for box in boxes)
    deep = len(layers) > plots.LAYERS_PER_PANEL  # widens the panels, one a row
    columns = 1 if deep else min(len(metrics), 2)
    assert (fig.get_figwidth() / columns > 5.0) == deep
    assert len({round(ax.get_window_extent().x0) for ax in panels}) == columns


@pytest.mark.parametrize("model, probe", [
    ("cnn4", "sparsity"), (LONG_MODEL, LONG_KEY),
    (LONG_MODEL, "hdbscan(dims=30,exact=True,min_cluster_size=20,min_samples=5)")])
def test_titles_name_probe_model_and_dataset_and_stay_inside_the_figure(model, probe):
    fig, frame = _laid_out(metric_figure(_rows(probe, RESNET18), f"{model} on cifar10"))
    title = fig.get_suptitle()
    assert title.replace("\n", "").startswith(probe) and model in title.replace("\n", "") and "cifar10" in title
    assert _inside(fig._suptitle.get_window_extent(), frame)
    top_panel = max(ax.get_window_extent().y1 for ax in fig.axes)
    assert fig._suptitle.get_window_extent().y0 >= top_panel  # above the panels, not over them


def test_a_model_scope_probe_is_bars_per_variant_with_error_bars():
    rows = _rows("attribution", ["model"], ("gini", "top5_mass"))
    fig, frame = _laid_out(probe_figure(rows, "resnet18 on cifar10"))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(VARIANTS)
    assert ax.get_xlabel() == "variant"
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(len(c) == len(VARIANTS) for c in bars)  # a group per variant, a bar per metric
    assert all(c.errorbar is not None for c in bars)
    gini = bars[0]
    assert [round(b.get_height(), 6) for b in gini] == [round(0.1 * k, 6) for k in range(len(VARIANTS))]
    assert "attribution" in fig.get_suptitle() and "resnet18 on cifar10" in fig.get_suptitle()


def test_written_pngs_have_the_laid_out_size(tmp_path):
    runs = [RunResult(v, s, 0.9, 0.8, 0.1, probes={"sparsity": {layer: {"channel_sparsity": 0.1 * s}
                                                                  for layer in DEEP},
                                                     "attribution": {"model": {"gini": 0.5 + 0.1 * s}}})
            for s in range(2) for v in ("bn", "identity")]
    results = Results("deepnet", "digits", {}, runs, layers=DEEP)
    write_outputs(results, tmp_path)
    image = mpimg.imread(tmp_path / "plots" / "sparsity.png")
    title = "sparsity — deepnet on digits (mean ± std over 2 seeds)"
    assert image.shape[:2][::-1] == figure_pixels(1, DEEP, title)
    wide = round((60 * plots.LAYER_INCHES + plots.PANEL_MARGIN_INCHES) * 100)
    assert figure_pixels(1, DEEP)[0] == wide > figure_pixels(1)[0]
    title = "attribution — deepnet on digits (mean ± std over 2 seeds)"
    assert mpimg.imread(tmp_path / "plots" / "attribution.png").shape[:2][::-1] == figure_pixels(1, (), title)
    assert [r.layer for r in metric_stats(results, "attribution", "gini")] == ["model", "model"]
