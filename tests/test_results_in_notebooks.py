"""Results in a researcher's notebook: a tidy pandas frame, an HTML report, a figure per probe."""

import csv
import io
import math
import sys

import pytest
from matplotlib.figure import Figure

import bnprobe
from bnprobe.errors import BnprobeError, MissingExtraError
from bnprobe.report import Results, RunResult


def _results() -> Results:
    runs = []
    for variant, shift in (("bn", 0.0), ("identity", 0.1)):
        for seed in (0, 1):
            runs.append(RunResult(
                variant=variant, seed=seed, train_accuracy=0.9 - shift, test_accuracy=0.8 - shift + 0.01 * seed,
                final_loss=0.3, epochs_run=2,
                probes={"sparsity": {f"features.{k}": {"channel_sparsity": 0.1 * k + shift + 0.01 * seed,
                                                       "dead_fraction": None if k == 2 else 0.0}
                                     for k in (1, 2, 3)}}))
    return Results(model="cnn4", dataset="digits", config={"probes": ["sparsity"]}, runs=runs,
                   layers=["features.1", "features.2", "features.3"])


def test_the_frame_holds_every_number_of_the_csv_with_model_and_dataset():
    pd = pytest.importorskip("pandas")
    results = _results()
    frame = results.to_frame()
    assert list(frame.columns) == ["model", "dataset", "variant", "seed", "probe", "layer", "metric", "value"]
    assert set(frame["model"]) == {"cnn4"} and set(frame["dataset"]) == {"digits"}
    assert frame["seed"].dtype == "int64" and frame["value"].dtype == "float64"
    rows = list(csv.DictReader(io.StringIO(results.to_csv())))
    assert len(frame) == len(rows)
    for (_, got), want in zip(frame.iterrows(), rows, strict=True):
        assert (got["variant"], str(got["seed"]), got["probe"], got["layer"], got["metric"]) == \
            (want["variant"], want["seed"], want["probe"], want["layer"], want["metric"])
        assert math.isnan(got["value"]) if want["value"] == "" else got["value"] == pytest.approx(float(want["value"]))
    means = frame[frame.metric == "channel_sparsity"].groupby(["variant", "layer"])["value"].mean()
    assert means[("identity", "features.3")] == pytest.approx(0.3 + 0.1 + 0.005)
    assert isinstance(pd.concat([frame, frame]), pd.DataFrame)


def test_without_pandas_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(MissingExtraError, match=r"Results.to_frame\(\) needs pandas.*pip install 'bnprobe\[pandas\]'"):
        _results().to_frame()
    with pytest.raises(ImportError):  # catchable as what it is, too
        _results().to_frame()


def test_the_html_is_the_terminal_report():
    html = _results()._repr_html_()
    assert html.startswith("<pre") and html.rstrip().endswith("</pre>")
    assert "channel_sparsity" in html and "features.3" in html and "identity" in html
    assert "<html" not in html  # a fragment for a notebook cell


def test_plot_returns_the_figure_of_a_probe_metric():
    results = _results()
    figure = bnprobe.plot(results, "sparsity", "channel_sparsity")
    assert isinstance(figure, Figure)
    (axes,) = figure.axes
    assert len(axes.get_lines()) >= 2  # one series per variant
    assert [t.get_text() for t in axes.get_xticklabels()] == ["features.1", "features.2", "features.3"]
    default = bnprobe.plot(results, "sparsity")
    assert "channel_sparsity" in default.axes[0].get_ylabel() + default.axes[0].get_title()
    assert isinstance(bnprobe.plot(results, "run", "test_accuracy"), Figure)


def test_plot_names_what_there_is_when_asked_for_what_there_is_not():
    with pytest.raises(BnprobeError, match="no probe 'hdbscan' in these results; probes: run, sparsity"):
        bnprobe.plot(_results(), "hdbscan")
    with pytest.raises(BnprobeError, match="probe sparsity has no numbers for metric 'ari'; metrics: "):
        bnprobe.plot(_results(), "sparsity", "ari")


def test_two_studies_compare_as_html_and_as_the_json_of_bnprobe_compare(tmp_path):
    from bnprobe.report import comparison_json

    a, b = _results(), _results()
    for run in b.runs:
        run.test_accuracy += 0.05
    comparison = bnprobe.compare(a, b)
    assert comparison.to_dict() == comparison_json(a, b)
    html = comparison._repr_html_()
    assert html.startswith("<pre") and "channel_sparsity" in html and "test" in html
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    from_folders = bnprobe.compare(tmp_path / "a", tmp_path / "b")
    assert from_folders.sources == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert str(tmp_path / "a") in from_folders._repr_html_()
