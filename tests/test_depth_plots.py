"""The figures where a curve says more than a table: the ablation probe's curves, a panel per layer,
and the rank probe's numbers by depth, a line per variant; both written into ``plots/`` by default."""

import csv

import matplotlib.image as mpimg
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

import bnprobe
from bnprobe.errors import BnprobeError
from bnprobe.report import Results, RunResult, write_outputs
from bnprobe.report._files import plot_metrics
from bnprobe.report._numbers import curve_metrics
from bnprobe.report._plots import figure_pixels

LAYERS = ["features.2", "features.5", "features.9"]
CHANNELS = {"features.2": 8, "features.5": 3, "features.9": 4}
FRACTIONS = ("0", "0.5", "1")
ABLATION = "ablation(fractions=[0.5],orders=2)"


def _ablation_numbers(variant: str, seed: int) -> dict[str, dict[str, float | None]]:
    """A layer's curves: the random order falls linearly, the selectivity order faster; identity lower.
    ``features.9`` has no channel with a selectivity index: no selectivity-order points."""
    drop = 0.1 if variant == "identity" else 0.0
    numbers = {}
    for layer in LAYERS:
        one = {"channels": float(CHANNELS[layer]), "auc_selective": 0.4, "auc_random": 0.5}
        for f in FRACTIONS:
            one[f"accuracy_random_{f}"] = 0.9 - drop - 0.6 * float(f) + 0.01 * seed
            one[f"accuracy_selective_{f}"] = None if layer == "features.9" else 0.9 - drop - 0.8 * float(f) ** 0.5
        numbers[layer] = one
    return numbers


def _results(probes=lambda variant, seed: {ABLATION: _ablation_numbers(variant, seed)}, seeds=2) -> Results:
    runs = [RunResult(variant, seed, 0.95, 0.9, 0.1, probes=probes(variant, seed))
            for seed in range(seeds) for variant in ("bn", "identity")]
    return Results("cnn4", "digits", {}, runs, layers=LAYERS)


def _panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


# --------------------------------------------------------------------------------------------------
# Ablation curves

def test_a_panel_per_layer_a_solid_and_a_dashed_line_per_variant_with_a_band_over_seeds():
    results = _results()
    fig = bnprobe.ablation_curves(results)
    assert isinstance(fig, Figure)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == LAYERS  # forward order
    first = panels[0]
    lines = {line.get_label(): line for line in first.get_lines()}
    assert set(lines) == {"bn, most selective first", "bn, random order", "identity, most selective first",
                          "identity, random order"}
    assert lines["bn, most selective first"].get_linestyle() == "-"
    assert lines["bn, random order"].get_linestyle() == "--"
    assert lines["bn, random order"].get_color() == lines["bn, most selective first"].get_color() \
        != lines["identity, random order"].get_color()
    # the mean over the two seeds, at 0, 1/2 and 1 of 8 channels
    assert list(lines["bn, random order"].get_xdata()) == [0.0, 0.5, 1.0]
    assert list(lines["bn, random order"].get_ydata()) == pytest.approx([0.905, 0.605, 0.305])
    assert list(lines["identity, most selective first"].get_ydata()) == pytest.approx(
        [0.8, 0.8 - 0.8 * 0.5 ** 0.5, 0.0])
    # the random curves differ by seed: a +-std band each; the selective ones do not
    assert sum(isinstance(c, PolyCollection) for c in first.collections) == 2
    # half of 3 channels is 2 of them (halves up): the point is drawn where it was measured
    middle = {line.get_label(): line for line in panels[1].get_lines()}
    assert list(middle["bn, random order"].get_xdata()) == pytest.approx([0.0, 2 / 3, 1.0])
    # a layer without a selectivity order has only the random-order lines
    last = [line.get_label() for line in panels[2].get_lines()]
    assert sorted(last) == ["bn, random order", "identity, random order"]
    title = fig.get_suptitle().replace("\n", " ")
    assert title.startswith(ABLATION) and "cnn4 on digits" in title and "over 2 seeds" in title
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["bn", "identity", "most selective first", "random order"]


def test_the_curve_metrics_are_the_accuracies_by_fraction_then_the_channels():
    assert curve_metrics(_results(), ABLATION) == [
        "accuracy_selective_0", "accuracy_random_0", "accuracy_selective_0.5", "accuracy_random_0.5",
        "accuracy_selective_1", "accuracy_random_1", "channels"]


def test_write_outputs_writes_the_curves_beside_the_areas_by_layer(tmp_path):
    results = _results()
    written = write_outputs(results, tmp_path)
    stems = {path.name for path in written}
    curves = [name for name in stems if name.endswith("_curves.png")]
    assert len(curves) == 1 and curves[0].startswith("ablation")
    png = tmp_path / "plots" / curves[0]
    table = png.with_suffix(".csv")
    assert png.is_file() and table.is_file() and table in written
    assert png.with_name(curves[0].replace("_curves", "")).is_file()  # the areas by layer, as before
    rows = list(csv.DictReader(table.open()))
    assert {row["metric"] for row in rows} == set(curve_metrics(results, ABLATION))
    assert {row["layer"] for row in rows} == set(LAYERS) and {row["variant"] for row in rows} == {"bn", "identity"}
    height, width = mpimg.imread(png).shape[:2]
    assert width == 3 * 320 and height > 250  # three panels in a row


def test_no_curves_without_the_ablation_probe_and_a_one_line_error_from_python(tmp_path):
    results = _results(lambda variant, seed: {"sparsity": {layer: {"channel_sparsity": 0.1} for layer in LAYERS}})
    written = write_outputs(results, tmp_path)
    assert not any(path.name.endswith("_curves.png") for path in written)
    with pytest.raises(BnprobeError, match=r"no ablation probe in these results to draw curves of; probes: "
                                           r"sparsity \(a study run with probes=\['ablation'\] has them\)") as caught:
        bnprobe.ablation_curves(results)
    assert "\n" not in str(caught.value)
    with pytest.raises(BnprobeError, match="probe sparsity has no ablation curves") as caught:
        bnprobe.ablation_curves(results, "sparsity")
    assert "\n" not in str(caught.value)


def test_two_ablation_settings_need_the_key_named():
    results = _results(lambda variant, seed: {ABLATION: _ablation_numbers(variant, seed),
                                              "ablation": _ablation_numbers(variant, seed)})
    with pytest.raises(BnprobeError, match=r"2 ablation probes; name one: .* ablation\(fractions") as caught:
        bnprobe.ablation_curves(results)
    assert "\n" not in str(caught.value)
    assert len(_panels(bnprobe.ablation_curves(results, "ablation"))) == len(LAYERS)
    with pytest.raises(BnprobeError, match="no probe 'ablation\\(orders=5\\)' in these results"):
        bnprobe.ablation_curves(results, "ablation(orders=5)")


def test_the_curves_are_exported_where_plot_is():
    assert bnprobe.ablation_curves is bnprobe.report.ablation_curves
    assert "ablation_curves" in bnprobe.__all__ and "ablation_curves" in bnprobe.report.__all__


# --------------------------------------------------------------------------------------------------
# Rank by depth

def _rank_numbers(variant: str, seed: int) -> dict[str, dict[str, float]]:
    """Effective rank falling with depth, lower without bn; filed in reverse order, drawn in forward order."""
    scale = 1.0 if variant == "bn" else 0.5
    return {layer: {"effective_rank": scale * (30 - 10 * i) + seed, "stable_rank": scale * (5 - i),
                    "pca_components_99": 20.0 - i, "pca_fraction_99": (20.0 - i) / 48}
            for i, layer in reversed(list(enumerate(LAYERS)))}


def test_a_study_with_the_rank_probe_draws_its_numbers_by_depth(tmp_path):
    results = _results(lambda variant, seed: {"rank": _rank_numbers(variant, seed)})
    assert plot_metrics(results, "rank") == ["effective_rank", "stable_rank", "pca_fraction_99"]
    write_outputs(results, tmp_path)
    png, table = tmp_path / "plots" / "rank.png", tmp_path / "plots" / "rank.csv"
    rows = list(csv.DictReader(table.open()))
    assert {row["metric"] for row in rows} == {"effective_rank", "stable_rank", "pca_fraction_99"}
    assert [row["layer"] for row in rows if row["metric"] == "effective_rank" and row["variant"] == "bn"] == LAYERS
    title = "rank — cnn4 on digits (mean ± std over 2 seeds)"
    assert mpimg.imread(png).shape[:2][::-1] == figure_pixels(3, LAYERS, title)  # three panels by layer

    fig = bnprobe.plot(results, "rank")  # the key metric: layers in order on the x axis, a line per variant
    (ax,) = _panels(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS and ax.get_xlabel() == "layer (forward order)"
    series = {c.get_label(): c.lines[0] for c in ax.containers}
    assert set(series) == {"bn", "identity"}
    assert list(series["bn"].get_ydata()) == pytest.approx([30.5, 20.5, 10.5])
    assert list(series["identity"].get_ydata()) == pytest.approx([15.5, 10.5, 5.5])
