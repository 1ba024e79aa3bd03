"""The intrinsic_dim plugin on inputs with known answers, against skdim run directly, and in a tiny study."""

import math

import numpy as np
import pytest
import skdim
import torch

from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe, list_probes
from bnprobe.probes.base import LayerData, ProbeContext
from bnprobe.report import metric_stats
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig
from bnprobe_intrinsic_dim import ESTIMATORS, IntrinsicDimProbe, estimate, two_nearest

CONTEXT = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1),
                       device=torch.device("cpu"))


def _plane(samples=2000, dims=5, features=100, seed=0):
    """``samples`` Gaussian points on a random ``dims``-dimensional plane (orthonormal basis) in ``features``."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(features, dims)))
    return (rng.normal(size=(samples, dims)) @ basis.T).astype(np.float32)


def _measure(vectors, **params):
    layer = LayerData(name="l", shape=(vectors.shape[1],), labels=np.zeros(len(vectors), int),
                      load_vectors=lambda: vectors)
    return get_probe("intrinsic_dim", **params).measure(layer, CONTEXT)


def test_twonn_finds_5_dimensions_of_a_plane_in_100_and_agrees_with_skdim_run_directly():
    vectors = _plane()
    numbers = _measure(vectors)
    assert 4.5 < numbers["intrinsic_dim"] < 5.5
    assert numbers["intrinsic_dim_ratio"] == pytest.approx(numbers["intrinsic_dim"] / 100)
    assert numbers["duplicate_fraction"] == 0 and numbers["samples_used"] == 2000
    direct = skdim.id.TwoNN().fit(vectors.astype(np.float64)).dimension_  # its own neighbour search
    assert numbers["intrinsic_dim"] == pytest.approx(direct, rel=1e-6)


def test_the_neighbour_distances_are_exact_where_the_gram_form_has_no_digits_left():
    far = np.full((1, 64), 1e3, np.float32)  # 3 points 1e-3 apart, far from the mean (the origin is the 4th)
    vectors = np.concatenate([np.zeros_like(far), far, far + np.float32(1e-3) * np.eye(64, dtype=np.float32)[:2]])
    step = float(vectors[2, 0]) - 1e3  # 1e-3 as float32 holds it next to 1e3: 0.0009765625
    r = two_nearest(torch.from_numpy(vectors))  # float32 Gram form: centred |a|^2 ~ 4e6, rounding ~0.5 >> step^2
    assert r[1] == pytest.approx([step, step], rel=1e-12)
    assert r[2] == pytest.approx([step, math.sqrt(2) * step], rel=1e-12)
    assert r[0] == pytest.approx([8000, 8000], rel=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_offered_estimator_finds_about_5(estimator):
    numbers = _measure(_plane(), estimator=estimator)
    assert 4.3 < numbers["intrinsic_dim"] < 5.7, estimator  # CorrInt reads 4.57, the lowest


def test_the_estimator_is_named_case_insensitively_and_a_wrong_one_is_one_line_listing_the_valid_ones():
    assert get_probe("intrinsic_dim", estimator="twonn").key == "intrinsic_dim"
    assert get_probe("intrinsic_dim", estimator="mle").key == "intrinsic_dim(estimator='MLE')"
    with pytest.raises(BnprobeError) as error:
        get_probe("intrinsic_dim", estimator="DANCo")
    assert str(error.value) == ("probe intrinsic_dim: estimator must be one of TwoNN, MLE, MOM, CorrInt, GRIDE; "
                                "got 'DANCo'")
    with pytest.raises(BnprobeError, match="max_samples must be >= 20"):
        get_probe("intrinsic_dim", max_samples=5)


def test_exact_duplicates_are_dropped_and_counted():
    vectors = _plane(samples=1000)
    rng = np.random.default_rng(1)
    copies = vectors[rng.integers(0, 1000, 300)]
    dead = np.zeros((200, 100), np.float32)  # one all-zero ReLU pattern, 200 times
    with_duplicates = rng.permutation(np.concatenate([vectors, copies, dead]))
    numbers = _measure(with_duplicates)
    assert numbers["duplicate_fraction"] == pytest.approx(1 - 1001 / 1500)  # 1,000 points and one zero vector
    assert numbers["samples_used"] == 1001
    distinct = _measure(np.concatenate([vectors, dead[:1]]))
    assert numbers["intrinsic_dim"] == distinct["intrinsic_dim"]  # as if each vector were there once


def test_max_samples_bounds_the_fit_with_a_seeded_subsample_of_the_distinct_vectors():
    vectors = torch.from_numpy(_plane())
    first, again = estimate(vectors, "TwoNN", 500, 3), estimate(vectors.flip(0), "TwoNN", 500, 3)
    assert (first.distinct, first.used) == (2000, 500)
    assert first.dimension == again.dimension  # the same subsample whatever the order of the samples
    assert estimate(vectors, "TwoNN", 500, 4).dimension != first.dimension
    assert 4.0 < first.dimension < 6.0


def test_a_constant_layer_reads_0_and_too_few_or_non_finite_vectors_null():
    assert _measure(np.ones((50, 8), np.float32))["intrinsic_dim"] == 0
    few = _measure(_plane(samples=10))
    assert math.isnan(few["intrinsic_dim"]) and few["samples_used"] == 10
    broken = _plane(samples=100)
    broken[3, 0] = np.nan
    assert all(math.isnan(v) for v in _measure(broken).values())


def test_the_plugin_is_found_through_its_entry_point():
    info = next(info for info in list_probes() if info.name == "intrinsic_dim")
    assert info.source == "bnprobe-intrinsic-dim" and info.cls is IntrinsicDimProbe


def test_it_runs_in_a_tiny_digits_study_paired_against_bn():
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=200,
                         probes=["intrinsic_dim"], device="cpu", checkpoints="none",
                         train=TrainConfig(epochs=1, batch_size=128))
    results = run_study(config)
    assert not any(run.failures for run in results.runs)
    values = {run.variant: run.probes["intrinsic_dim"] for run in results.runs}
    assert set(values["bn"]) == set(values["identity"]) == set(results.layers)
    rows = [row for row in metric_stats(results, "intrinsic_dim", "intrinsic_dim") if row.variant == "identity"]
    assert len(rows) == len(results.layers)
    for row in rows:
        expected = values["identity"][row.layer]["intrinsic_dim"] - values["bn"][row.layer]["intrinsic_dim"]
        assert row.difference.n == 1 and row.difference.estimate == pytest.approx(expected)
    assert all(0 < layer["intrinsic_dim"] < 200 for run in values.values() for layer in run.values())
