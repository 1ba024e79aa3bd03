"""The procrustes probe: netrep's angular shape distance on inputs with known answers, against a direct
scipy implementation, and in a tiny digits study paired with bn."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes

from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe
from bnprobe.probes._procrustes import procrustes_distances
from bnprobe.probes.base import LayerData, ProbeContext
from bnprobe.report import metric_stats
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _netrep(x: np.ndarray, y: np.ndarray) -> float:
    """netrep's LinearMetric(alpha=1, center_columns=True, zero_pad=True), angular, written out with scipy."""
    x, y = x - x.mean(0), y - y.mean(0)
    width = max(x.shape[1], y.shape[1])
    x, y = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (x, y))
    rotation = orthogonal_procrustes(x, y)[0]
    aligned = x @ rotation
    return float(np.arccos(np.clip(np.sum(aligned * y) / (np.linalg.norm(aligned) * np.linalg.norm(y)), -1, 1)))


def _distances(x: np.ndarray, y: np.ndarray | None, method: str = "exact") -> dict[str, float]:
    return procrustes_distances(torch.from_numpy(x), None if y is None else torch.from_numpy(y), method)


@pytest.mark.parametrize("shape", [(50, 8), (12, 30)], ids=["tall", "wide"])
def test_a_rotated_scaled_translated_copy_is_at_0(shape):
    x = _random(*shape)
    rotation = np.linalg.qr(_random(shape[1], shape[1], seed=1))[0]
    for copy in (x @ rotation, 3.7 * x @ rotation + 5.0, -x):
        d = _distances(x, copy)
        assert d["procrustes"] == pytest.approx(0.0, abs=1e-6)
        assert d["procrustes_euclidean"] == pytest.approx(0.0, abs=1e-6)
    assert _distances(x, None) == {"procrustes": 0.0, "procrustes_euclidean": 0.0}  # the bn run: exactly 0


@pytest.mark.parametrize("shapes", [((60, 5), (60, 5)), ((60, 5), (60, 12)), ((15, 40), (15, 25))],
                         ids=["same-width", "zero-padded", "wider-than-samples"])
def test_agrees_with_netrep_s_formula_and_independent_inputs_are_far(shapes):
    x, y = _random(*shapes[0], seed=2), _random(*shapes[1], seed=3)
    d = _distances(x, y)
    assert d["procrustes"] == pytest.approx(_netrep(x, y), abs=1e-10)
    assert d["procrustes_euclidean"] == pytest.approx(2 * math.sin(d["procrustes"] / 2), abs=1e-12)
    assert d["procrustes"] > 0.3


def test_the_estimate_is_close_to_the_exact_value():
    x = _random(300, 40, seed=4)
    y = x @ _random(40, 30, seed=5) + _random(300, 30, seed=6)
    exact, estimate = _distances(x, y)["procrustes"], _distances(x, y, "estimate")["procrustes"]
    assert estimate == pytest.approx(exact, rel=0.05)


def test_a_constant_layer_has_no_distance():
    assert all(math.isnan(v) for v in _distances(np.ones((10, 3)), _random(10, 3)).values())


def _layer(vectors: np.ndarray) -> LayerData:
    vectors = vectors.astype(np.float32)
    return LayerData("block.act", (vectors.shape[1],), np.zeros(len(vectors)), load_vectors=lambda: vectors)


def _context(variant: str | None, reference: LayerData | None) -> ProbeContext:
    return ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(0), labels=torch.zeros(0),
                        device=torch.device("cpu"), variant=variant,
                        reference=lambda name: reference if name == "block.act" else None)


def test_the_probe_compares_with_the_bn_run_and_needs_one():
    bn, other = _layer(_random(30, 4)), _layer(_random(30, 6, seed=7))
    probe = get_probe("procrustes")
    assert probe.measure(bn, _context("bn", None)) == {"procrustes": 0.0, "procrustes_euclidean": 0.0}
    measured = probe.measure(other, _context("identity", bn))["procrustes"]
    assert measured == pytest.approx(_netrep(bn.vectors().astype(np.float64), other.vectors().astype(np.float64)),
                                     abs=1e-6)
    with pytest.raises(BnprobeError, match="no bn run to compare layer block.act of identity with; add the bn"):
        probe.measure(other, _context("identity", None))
    with pytest.raises(BnprobeError, match="variant is not stated"):
        probe.measure(other, _context(None, bn))


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(BnprobeError, match=r"^probe procrustes: method must be one of auto, exact, estimate; "
                                           r"got 'svd'$"):
        get_probe("procrustes", method="svd")
    with pytest.raises(BnprobeError, match=r"^probe procrustes: unknown parameter\(s\) alpha; it takes: method$"):
        get_probe("procrustes", alpha=0.5)


def test_runs_in_a_tiny_digits_study_paired_against_bn():
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=200, probes=["procrustes"],
                         device="cpu", checkpoints="none", train=TrainConfig(epochs=1, batch_size=128))
    results = run_study(config)
    assert not any(run.failures for run in results.runs)
    values = {run.variant: run.probes["procrustes"] for run in results.runs}
    assert set(values["bn"]) == set(values["identity"]) == set(results.layers)
    assert all(values["bn"][layer]["procrustes"] == 0.0 for layer in results.layers)
    rows = [row for row in metric_stats(results, "procrustes", "procrustes") if row.variant == "identity"]
    assert len(rows) == len(results.layers)
    for row in rows:
        assert 0.0 < values["identity"][row.layer]["procrustes"] <= math.pi / 2
        assert row.difference.n == 1
        assert row.difference.estimate == pytest.approx(values["identity"][row.layer]["procrustes"])
