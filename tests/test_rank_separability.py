"""The rank and separability probes: known answers, the exact formulas they reduce, and a tiny study."""

import math

import numpy as np
import pytest
import torch

from bnprobe.errors import BnprobeError
from bnprobe.probes import _rank as rank_module
from bnprobe.probes import get_probe
from bnprobe.probes._separability import class_split, nc1
from bnprobe.probes.base import LayerData, ProbeContext

CONTEXT = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1),
                       device=torch.device("cpu"))


def _layer(vectors, labels=None):
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.arange(len(vectors)) % 3 if labels is None else np.asarray(labels)
    return LayerData(name="l", shape=(vectors.shape[1],), labels=labels, load_vectors=lambda: vectors)


def _equal_singular_values(samples, features, rank, seed=0):
    """A centred ``samples x features`` matrix with ``rank`` singular values, all 5."""
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((samples, rank))
    left = np.linalg.qr(left - left.mean(axis=0))[0]  # orthonormal columns, each summing to 0
    right = np.linalg.qr(rng.standard_normal((features, rank)))[0]
    return 5.0 * left @ right.T


def _spectrum_numbers(vectors):
    """The rank probe's numbers by hand, from numpy's singular values of the centred vectors."""
    s = np.linalg.svd(vectors - vectors.mean(axis=0), compute_uv=False)
    p = s / s.sum()
    share = np.cumsum(s**2) / (s**2).sum()
    components = int(np.searchsorted(share, 0.99)) + 1
    return {"effective_rank": math.exp(-(p[p > 0] * np.log(p[p > 0])).sum()), "stable_rank": (s**2).sum() / s[0]**2,
            "pca_components_99": components, "pca_fraction_99": components / min(vectors.shape)}


def _relu_like(samples, features, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.standard_normal((samples, 12)) * np.linspace(3, 0.5, 12)
    values = codes @ rng.standard_normal((12, features)) + rng.normal(0, 0.5, (samples, features)) - 0.3
    return np.maximum(values, 0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# rank

@pytest.mark.parametrize("shape", [(40, 12), (12, 40)], ids=["features-gram", "samples-gram"])
def test_a_rank_3_matrix_with_equal_singular_values_has_effective_and_stable_rank_3(shape):
    numbers = get_probe("rank").measure(_layer(_equal_singular_values(*shape, rank=3)), CONTEXT)
    assert numbers["effective_rank"] == pytest.approx(3.0, rel=1e-6)
    assert numbers["stable_rank"] == pytest.approx(3.0, rel=1e-6)
    assert numbers["pca_components_99"] == 3 and numbers["pca_fraction_99"] == pytest.approx(3 / 12)


def test_rank_numbers_are_the_singular_value_formulas_of_the_centred_vectors():
    vectors = _relu_like(60, 25) + 7.0  # an offset: centring takes it away
    numbers = get_probe("rank").measure(_layer(vectors), CONTEXT)
    expected = _spectrum_numbers(vectors.astype(np.float64))
    assert numbers == {k: pytest.approx(v, rel=1e-6) for k, v in expected.items()}


def test_a_constant_layer_has_rank_0_and_a_diverged_one_none():
    for constant in (np.zeros((20, 8)), np.tile(np.arange(8.0), (20, 1))):
        assert get_probe("rank").measure(_layer(constant), CONTEXT) == dict.fromkeys(
            ("effective_rank", "stable_rank", "pca_components_99", "pca_fraction_99"), 0.0)
    diverged = _relu_like(20, 8)
    diverged[3, 2] = np.inf
    assert all(math.isnan(v) for v in get_probe("rank").measure(_layer(diverged), CONTEXT).values())


def test_the_estimate_is_close_to_the_exact_spectrum_and_auto_picks_by_size(monkeypatch):
    layer = _layer(_relu_like(700, 500, seed=3))
    exact = get_probe("rank", method="exact").measure(layer, CONTEXT)
    estimate = get_probe("rank", method="estimate").measure(layer, CONTEXT)
    assert estimate["stable_rank"] == pytest.approx(exact["stable_rank"], rel=1e-4)  # the top Ritz value
    assert estimate["effective_rank"] == pytest.approx(exact["effective_rank"], rel=0.03)
    assert estimate["pca_components_99"] == pytest.approx(exact["pca_components_99"], rel=0.03)
    assert get_probe("rank", method="estimate").measure(layer, CONTEXT) == estimate  # seeded
    assert get_probe("rank").measure(layer, CONTEXT) == exact  # 500 <= EXACT_MAX
    monkeypatch.setattr(rank_module, "EXACT_MAX", 499)
    assert get_probe("rank").measure(layer, CONTEXT) == estimate


def test_bad_method_is_one_line_error():
    with pytest.raises(BnprobeError, match="method must be one of auto, exact, estimate"):
        get_probe("rank", method="svd")


# --------------------------------------------------------------------------------------------------
# separability

def _direct_nc1(vectors, labels):
    """tr(Sigma_W pinv(Sigma_B)) / C with the features x features matrices, as Papyan et al. write it."""
    classes = np.unique(labels)
    means = np.stack([vectors[labels == c].mean(axis=0) for c in classes])
    within = vectors - means[np.searchsorted(classes, labels)]
    centred = means - vectors.mean(axis=0)
    sigma_w = within.T @ within / len(vectors)
    sigma_b = centred.T @ centred / len(classes)
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / len(classes)


def _direct_cdnv(vectors, labels):
    classes = np.unique(labels)
    means = [vectors[labels == c].mean(axis=0) for c in classes]
    var = [((vectors[labels == c] - m) ** 2).sum(axis=1).mean() for c, m in zip(classes, means, strict=True)]
    return np.mean([(var[i] + var[j]) / (2 * ((means[i] - means[j]) ** 2).sum())
                    for i in range(len(classes)) for j in range(i + 1, len(classes))])


@pytest.mark.parametrize(("samples", "features", "classes"), [(30, 6, 3), (40, 100, 4), (57, 9, 5)])
def test_nc1_in_the_span_of_the_class_means_is_the_direct_pinv_formula(samples, features, classes):
    rng = np.random.default_rng(samples)
    vectors = rng.standard_normal((samples, features)) + 3.0
    labels = rng.integers(0, classes, samples) * 7  # labels need not be 0..C-1
    assert nc1(class_split(torch.from_numpy(vectors), labels)) == pytest.approx(
        _direct_nc1(vectors, labels), rel=1e-10, abs=1e-10)
    numbers = get_probe("separability").measure(_layer(vectors, labels), CONTEXT)
    assert numbers["cdnv"] == pytest.approx(_direct_cdnv(vectors.astype(np.float32).astype(np.float64), labels),
                                            rel=1e-10)


def test_separated_classes_have_a_far_smaller_nc1_than_the_same_vectors_with_shuffled_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    vectors = rng.normal(0, 5, (4, 30))[labels] + rng.normal(0, 1, (200, 30))
    separated = get_probe("separability").measure(_layer(vectors, labels), CONTEXT)
    shuffled = get_probe("separability").measure(_layer(vectors, rng.permutation(labels)), CONTEXT)
    assert separated["nc1"] < shuffled["nc1"] / 100
    assert separated["cdnv"] < shuffled["cdnv"] / 10


def test_separability_without_two_classes_or_spread():
    with pytest.raises(BnprobeError, match="compares two classes at least"):
        get_probe("separability").measure(_layer(np.ones((10, 3)), np.zeros(10)), CONTEXT)
    dead = get_probe("separability").measure(_layer(np.zeros((12, 5))), CONTEXT)
    assert math.isnan(dead["nc1"]) and math.isnan(dead["cdnv"])


# --------------------------------------------------------------------------------------------------
# in a study

def test_rank_separability_and_dormant_fraction_in_a_tiny_digits_study_are_paired_with_bn():
    import bnprobe
    from bnprobe.report import metric_stats

    config = bnprobe.StudyConfig(model="cnn4", dataset="digits", variants=["bn", "identity"], samples=48,
                                 probes=["rank", "separability", "sparsity"], device="cpu", probe_workers=0,
                                 checkpoints="none", train=bnprobe.TrainConfig(epochs=1, batch_size=64))
    results = bnprobe.run_study(config)
    assert all(not run.failures for run in results.runs)
    for probe, metric in (("rank", "effective_rank"), ("rank", "pca_fraction_99"), ("separability", "nc1"),
                          ("separability", "cdnv"), ("sparsity", "dormant_fraction")):
        rows = metric_stats(results, probe, metric)
        identity = [row for row in rows if row.variant == "identity"]
        assert identity and all(row.difference is not None for row in identity), (probe, metric)
        assert all(row.summary is not None for row in rows), (probe, metric)
    for run in results.runs:
        for numbers in run.probes["rank"].values():
            assert 1 <= numbers["effective_rank"] <= 48 and 0 < numbers["pca_fraction_99"] <= 1
