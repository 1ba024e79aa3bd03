"""The ``cka_matrix`` probe of the bnprobe-cka plugin: every layer against every layer of the bn run,
filed by layer, drawn as a heatmap; and :func:`bnprobe_cka.cka_matrix` for two seeds of one variant."""

import csv

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

import bnprobe
from bnprobe.data import Dataset, Split
from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe, list_probes
from bnprobe.report import Results
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig
from bnprobe_cka import CKAMatrixProbe, cka_matrix, cka_matrix_values, linear_cka


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _textbook(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


# --------------------------------------------------------------------------------------------------
# The numbers

def test_every_cell_is_the_pair_s_linear_cka():
    rows = [_random(30, 4), _random(30, 50, seed=1), np.ones((30, 3))]
    columns = [_random(30, 6, seed=2), rows[0] @ np.linalg.qr(_random(4, 4, seed=3))[0]]
    values = cka_matrix_values(rows, columns)
    assert values.shape == (3, 2)
    for i in range(2):
        for j in range(2):
            assert values[i, j] == pytest.approx(_textbook(rows[i], columns[j]), rel=1e-9)
            assert values[i, j] == pytest.approx(linear_cka(rows[i], columns[j]), rel=1e-9)
    assert values[0, 1] == pytest.approx(1.0)  # a rotation of the same layer
    assert np.isnan(values[2]).all()  # a constant layer has nothing to align


def test_a_matrix_of_layers_with_themselves_is_symmetric_with_ones_on_its_diagonal():
    layers = [_random(25, 3), _random(25, 8, seed=1), _random(25, 40, seed=2)]
    values = cka_matrix_values(layers)
    np.testing.assert_allclose(values, values.T, rtol=1e-12)
    assert (np.diag(values) == 1.0).all()  # <K, K> / ||K||^2, not a rounding of it
    assert values[0, 1] == pytest.approx(_textbook(layers[0], layers[1]), rel=1e-9)


def test_layers_over_other_samples_are_refused():
    with pytest.raises(BnprobeError, match=r"same samples; got shapes \(5, 2\), \(4, 2\)"):
        cka_matrix_values([np.zeros((5, 2))], [np.zeros((4, 2))])


# --------------------------------------------------------------------------------------------------
# The probe, on captures

class _TinyCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 3


def test_the_probe_files_the_matrix_by_layer_with_the_cka_probe_s_number_on_the_diagonal():
    torch.manual_seed(0)
    data = _inputs()
    bn = bnprobe.capture(_TinyCNN(), data, layers="act,conv", variant="bn")
    other = bnprobe.capture(_TinyCNN(), data, layers="act,conv", variant="identity")
    probes = bnprobe.build_probes("cka,cka_matrix")
    compared = bnprobe.run_probes(other, probes, reference=bn).values
    matrix = compared["cka_matrix"]
    assert list(matrix) == other.names  # filed by layer, not under "model"
    for row in other.names:
        assert matrix[row]["cka"] == pytest.approx(compared["cka"][row]["cka"], rel=1e-9)
        assert list(matrix[row]) == ["cka", *(f"bn:{name}" for name in bn.names)]
        for column in bn.names:
            expected = _textbook(other[row].vectors().astype(np.float64), bn[column].vectors().astype(np.float64))
            assert matrix[row][f"bn:{column}"] == pytest.approx(expected, rel=1e-6)
    assert len({round(v, 6) for cells in matrix.values() for v in cells.values()}) > len(other.names)
    own = bnprobe.run_probes(bn, probes).values["cka_matrix"]
    assert all(own[name]["cka"] == 1.0 for name in bn.names)
    assert own[bn.names[0]][f"bn:{bn.names[1]}"] == pytest.approx(own[bn.names[1]][f"bn:{bn.names[0]}"])
    with pytest.raises(BnprobeError, match="no bn run to compare the layers of identity with"):
        bnprobe.run_probes(other, [get_probe("cka_matrix")])


def test_a_model_scope_probe_may_file_only_under_captured_layers():
    class Stray(CKAMatrixProbe):
        def measure(self, layer, context):
            return {"no.such.layer": {"cka": 0.5}}

    bn = bnprobe.capture(_TinyCNN(), _inputs(), variant="bn")
    with pytest.raises(BnprobeError, match="numbers filed under layer 'no.such.layer', which was not captured"):
        bnprobe.run_probes(bn, [Stray()])


def test_the_plugin_declares_the_probe():
    info = {i.name: i for i in list_probes()}["cka_matrix"]
    assert info.source == "bnprobe-cka" and info.cls is CKAMatrixProbe
    assert (CKAMatrixProbe.scope, CKAMatrixProbe.layer_matrix, CKAMatrixProbe.key_metric) == ("model", "bn:", "cka")


# --------------------------------------------------------------------------------------------------
# In a study: the heatmap in plots/

def _tiny_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset("tiny", Split(torch.randn(48, 1, 8, 8, generator=g), torch.arange(48) % 3),
                   Split(torch.randn(12, 1, 8, 8, generator=g), torch.arange(12) % 3), num_classes=3)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Results, object]:
    out = tmp_path_factory.mktemp("cka-matrix") / "out"
    config = StudyConfig(model="tiny", variants=("bn", "identity"), seeds=2, samples=24,
                         probes=["cka", "cka_matrix"], layers="act,conv", device="cpu",
                         train=TrainConfig(epochs=1, batch_size=16))
    return run_study(config, model=_TinyCNN(), dataset=_tiny_data(), out=out), out


def test_a_study_draws_each_variant_s_matrix_as_a_heatmap_with_its_numbers_beside_it(study):
    results, out = study
    assert all(not run.failures for run in results.runs)
    png, table = out / "plots" / "cka_matrix_heatmap.png", out / "plots" / "cka_matrix_heatmap.csv"
    assert Image.open(png).size[0] > 300
    rows = list(csv.DictReader(table.open()))
    assert {row["metric"] for row in rows} == {f"bn:{name}" for name in results.layers}
    assert {row["layer"] for row in rows} == set(results.layers)
    assert {row["variant"] for row in rows} == {"bn", "identity"}
    cell = next(r for r in rows if r["variant"] == "identity" and r["layer"] == results.layers[0]
                and r["metric"] == f"bn:{results.layers[-1]}")
    seeds = [run.probes["cka_matrix"][results.layers[0]][f"bn:{results.layers[-1]}"]
             for run in results.runs if run.variant == "identity"]
    assert float(cell["mean"]) == pytest.approx(np.mean(seeds)) and int(cell["n"]) == 2


def test_the_diagonal_is_reported_as_the_cka_probe_reports_it(study):
    results, _ = study
    for run in results.runs:
        for layer in results.layers:
            assert run.probes["cka_matrix"][layer]["cka"] == pytest.approx(run.probes["cka"][layer]["cka"], rel=1e-9)
    summary = bnprobe.report.summary_json(results)["probes"]["cka_matrix"]
    assert summary[results.layers[0]]["cka"]["identity"]["difference"]["n"] == 2  # paired over seeds, as cka


def test_heatmap_returns_the_figure_and_names_what_is_missing(study):
    results, _ = study
    fig = bnprobe.heatmap(results, "cka_matrix")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["bn", "identity"]
    assert fig._suptitle.get_text() == "cka_matrix — tiny on tiny (mean over 2 seeds)"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == results.layers
    with pytest.raises(BnprobeError, match="probe cka has no layer-by-layer matrix to draw"):
        bnprobe.heatmap(results, "cka")
    with pytest.raises(BnprobeError, match="no probe 'sparsity' in these results"):
        bnprobe.heatmap(results, "sparsity")


def test_two_seeds_of_one_variant_compared_layer_by_layer(study):
    results, out = study
    data = _inputs()

    def trained(seed: int) -> nn.Module:
        return bnprobe.load_run(out, variant="identity", seed=seed, model=_TinyCNN(), dataset=_tiny_data())

    seed0 = bnprobe.capture(trained(0), data, layers="act,conv", variant="identity", seed=0)
    seed1 = bnprobe.capture(trained(1), data, layers="act,conv", variant="identity", seed=1)
    matrix = cka_matrix(seed0, seed1)
    assert (matrix.rows, matrix.columns) == (seed0.names, seed1.names)
    assert (matrix.row_label, matrix.column_label) == ("identity seed 0", "identity seed 1")
    assert matrix.values[0, 1] == pytest.approx(linear_cka(seed0[seed0.names[0]].vectors(),
                                                           seed1[seed1.names[1]].vectors()), rel=1e-9)
    same = cka_matrix(seed0, seed0)
    np.testing.assert_allclose(np.diag(same.values), 1.0)
    assert not np.allclose(np.diag(matrix.values), 1.0)  # two trainings are not the same network
    fig = matrix.figure()
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["identity seed 0 vs identity seed 1"]
    given = cka_matrix({"a": torch.randn(20, 3, 2), "b": np.ones((20, 4))}, {"c": torch.randn(20, 5).half()})
    assert given.values.shape == (2, 1) and np.isnan(given.values[1, 0])
    other = bnprobe.capture(trained(1), (data[0] + 1, data[1]))
    with pytest.raises(BnprobeError, match="made on other samples"):
        cka_matrix(seed0, other)
    with pytest.raises(BnprobeError, match="compares two captures"):
        cka_matrix(seed0, [1, 2])
