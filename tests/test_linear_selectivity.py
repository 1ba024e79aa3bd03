"""The linear and selectivity probes on inputs with known answers, and in a tiny study against bn."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe
from bnprobe.probes._linear import LinearProbe
from bnprobe.probes._logistic import fit_logistic
from bnprobe.probes._selectivity import NEGATIVE_NOTE, SelectivityProbe
from bnprobe.probes.base import LayerData, ProbeContext
from bnprobe.report import metric_stats
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig

CPU = torch.device("cpu")
CONTEXT = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1), device=CPU)


def _layer(vectors, labels, shape=None):
    vectors = np.asarray(vectors, dtype=np.float32)
    return LayerData(name="l", shape=shape or (vectors.shape[1],), labels=np.asarray(labels),
                     load_vectors=lambda: vectors)


def _blobs(classes=4, per_class=50, features=10, seed=0):
    """One tight Gaussian blob per class, 6 apart."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    return rng.normal(0, 6, (classes, features))[labels] + rng.normal(0, 1, (labels.size, features)), labels


# --------------------------------------------------------------------------------------------------
# linear

def test_separable_blobs_are_decoded_and_shuffled_labels_are_not():
    vectors, labels = _blobs()
    decoded = LinearProbe().measure(_layer(vectors, labels), CONTEXT)
    assert decoded["accuracy"] >= 0.95 and decoded["features_used"] == 10
    assert decoded["chance_accuracy"] == pytest.approx(0.25)  # balanced, stratified: every fold's majority is 1/4
    shuffled = np.random.default_rng(1).permutation(labels)
    chance = LinearProbe().measure(_layer(vectors, shuffled), CONTEXT)
    assert chance["accuracy"] <= chance["chance_accuracy"] + 0.2


def test_chance_accuracy_is_the_training_folds_majority_share():
    vectors, _ = _blobs(classes=2, per_class=50)
    labels = np.r_[np.zeros(70, int), np.ones(30, int)]  # 70 / 30: each fold's majority is class 0
    assert LinearProbe().measure(_layer(vectors, labels), CONTEXT)["chance_accuracy"] == pytest.approx(0.7)


def test_the_k_sparse_probes_find_the_two_channels_that_carry_the_class():
    # 20 channels of noise; channels 3 and 11 place the 4 classes at the corners of a square, so one
    # channel tells two pairs of classes apart (accuracy about 1/2) and the two together all four.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    vectors = rng.normal(0, 1, (labels.size, 20))
    vectors[:, 3] += 4 * (labels % 2)
    vectors[:, 11] += 4 * (labels // 2)
    r = LinearProbe().measure(_layer(vectors, labels), CONTEXT)
    assert r["sparse_accuracy_4"] >= 0.9 and r["accuracy"] >= 0.9
    assert 0.35 <= r["sparse_accuracy_1"] <= 0.65 < r["sparse_accuracy_4"]
    assert math.isnan(r["sparse_accuracy_16"]) is False  # 16 of 20 channels
    assert math.isnan(LinearProbe(ks=[32]).measure(_layer(vectors, labels), CONTEXT)["sparse_accuracy_32"])


def test_a_conv_layer_is_reduced_by_pca_and_ranked_by_its_channel_means():
    # 8 channels of 4x4 maps; channel 5's maps are raised for class 1 only: its spatial mean alone decodes.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    maps = rng.normal(0, 1, (labels.size, 8, 4, 4))
    maps[:, 5] += 2 * labels[:, None, None]
    layer = _layer(maps.reshape(labels.size, -1), labels, shape=(8, 4, 4))
    r = LinearProbe(max_features=32, ks=[1]).measure(layer, CONTEXT)
    assert r["features_used"] == 32  # 128 features > max_features: PCA inside each fold
    assert r["sparse_accuracy_1"] >= 0.95 and r["accuracy"] >= 0.8


def test_the_torch_fit_is_scikit_learns_logistic_regression():
    vectors, labels = _blobs(classes=3, features=6, seed=2)
    vectors = (vectors - vectors.mean(0)) / vectors.std(0) + np.random.default_rng(3).normal(0, 2, vectors.shape)
    weights, bias = fit_logistic(torch.from_numpy(vectors), torch.from_numpy(labels), 3)
    ours = torch.softmax(torch.from_numpy(vectors) @ weights + bias, dim=1).numpy()
    theirs = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(vectors, labels).predict_proba(vectors)
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize(("params", "message"), [
    ({"folds": 1}, "folds must be >= 2, got 1"),
    ({"ks": [0, 4]}, "ks must be >= 1, got 0"),
    ({"ks": 4}, "ks must be a list of channel counts"),
    ({"max_features": 0}, "max_features must be >= 1"),
])
def test_bad_parameters_are_refused_in_one_line(params, message):
    with pytest.raises(BnprobeError, match=message) as caught:
        get_probe("linear", **params)
    assert "\n" not in str(caught.value)


def test_a_class_with_fewer_samples_than_folds_is_refused():
    vectors, labels = _blobs(classes=2, per_class=20)
    labels[:17] = 1  # class 0 keeps 3 samples
    with pytest.raises(BnprobeError, match="class 0 has 3 probed samples, fewer than folds=5"):
        LinearProbe().measure(_layer(vectors, labels), CONTEXT)


# --------------------------------------------------------------------------------------------------
# selectivity

def test_one_class_channels_have_selectivity_1_and_an_even_channel_0():
    labels = np.repeat(np.arange(4), 10)
    one_class = (labels[:, None] == np.arange(4)) * 3.0  # channel c fires for class c only
    even = np.full((labels.size, 1), 2.0)
    r = SelectivityProbe().measure(_layer(np.hstack([one_class, even]), labels), CONTEXT)
    assert r["selectivity_channels"] == 5
    assert r["class_selectivity"] == pytest.approx((4 * 1 + 0) / 5)
    assert r["class_selectivity_std"] == pytest.approx(0.4)
    assert r["class_selectivity_q90"] == pytest.approx(1.0)


def test_the_index_is_morcos_on_spatial_means_and_dead_or_negative_channels_are_left_out():
    # 2 classes, 3 channels of 2x2 maps: channel 0's class means 3 and 1 -> (3 - 1) / (3 + 1); channel 1
    # dead; channel 2 negative for class 0.
    labels = np.repeat([0, 1], 5)
    maps = np.zeros((10, 3, 2, 2))
    maps[:5, 0] = [[6, 0], [6, 0]]  # spatial mean 3
    maps[5:, 0] = 1.0
    maps[:5, 2], maps[5:, 2] = -1.0, 2.0
    layer = _layer(maps.reshape(10, -1), labels, shape=(3, 2, 2))
    probe = SelectivityProbe()
    r = probe.measure(layer, CONTEXT)
    assert r["selectivity_channels"] == 1 and r["class_selectivity"] == pytest.approx(0.5)
    assert probe.notes(layer, CONTEXT) == {"left_out": NEGATIVE_NOTE}
    assert probe.notes(_layer(maps[:, :2].reshape(10, -1), labels, shape=(2, 2, 2)), CONTEXT) == {}
    dead = probe.measure(_layer(np.zeros((10, 3)), labels), CONTEXT)
    assert dead["selectivity_channels"] == 0 and math.isnan(dead["class_selectivity"])


# --------------------------------------------------------------------------------------------------
# in a study

def test_both_probes_run_in_a_tiny_digits_study_paired_against_bn():
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=200,
                         probes=["linear(ks=[1,4])", "selectivity"], device="cpu", checkpoints="none",
                         train=TrainConfig(epochs=1, batch_size=128))
    results = run_study(config)
    linear = get_probe("linear", ks=[1, 4]).key
    assert not any(run.failures for run in results.runs)
    for probe, metric in ((linear, "accuracy"), ("selectivity", "class_selectivity")):
        values = {run.variant: run.probes[probe] for run in results.runs}
        assert set(values["bn"]) == set(values["identity"]) == set(results.layers)
        rows = [row for row in metric_stats(results, probe, metric) if row.variant == "identity"]
        assert len(rows) == len(results.layers)
        for row in rows:
            expected = values["identity"][row.layer][metric] - values["bn"][row.layer][metric]
            assert row.difference.n == 1 and row.difference.estimate == pytest.approx(expected)
    accuracy = [run.probes[linear][layer]["accuracy"] for run in results.runs for layer in results.layers]
    assert all(0.3 < a <= 1 for a in accuracy)  # 10 digit classes: far above chance after one epoch
