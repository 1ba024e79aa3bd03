import math

import hdbscan
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from bnprobe.errors import BnprobeError
from bnprobe.probes import build_probes, get_probe
from bnprobe.probes._clustering import (
    ALWAYS_ON_NOTE,
    MOSTLY_ON_NOTE,
    ONE_PATTERN_NOTE,
    BinaryPatternsProbe,
    HdbscanProbe,
    degenerate_note,
    euclidean_distances,
    pca_reduce,
)
from bnprobe.probes.base import LayerData, ProbeContext

CPU = torch.device("cpu")
CONTEXT = ProbeContext(model=torch.nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1), device=CPU)


def _layer(vectors, labels, shape=None):
    vectors = np.asarray(vectors, dtype=np.float32)
    shape = shape or (vectors.shape[1],)
    return LayerData(name="l", shape=shape, labels=np.asarray(labels), load_vectors=lambda: vectors)


def _blobs(seed=0, per_blob=30):
    """Three tight blobs 10 apart in 5-D, one class each."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 5) * 10
    vectors = np.vstack([c + rng.normal(0, 0.3, (per_blob, 5)) for c in centres]).astype(np.float32)
    return vectors, np.repeat([0, 1, 2], per_blob)


def _relu_vectors(samples, features, seed=0, classes=4):
    """ReLU-like vectors with class structure: blobs in 8-D, lifted linearly, noise, ReLU."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    codes = rng.normal(0, 1, (classes, 8))[labels] + rng.normal(0, 0.4, (samples, 8))
    values = codes @ rng.normal(0, 0.35, (8, features)) + rng.normal(0, 0.3, (samples, features)) - 0.2
    return np.maximum(values, 0).astype(np.float32), labels


# --------------------------------------------------------------------------------------------------
# hdbscan

def test_three_blobs_are_three_pure_clusters():
    vectors, labels = _blobs()
    r = HdbscanProbe().measure(_layer(vectors, labels), CONTEXT)
    assert r["n_clusters"] == 3
    assert r["noise_fraction"] == 0
    assert r["ari"] == pytest.approx(1.0)
    assert r["nmi"] == pytest.approx(1.0)
    assert r["purity"] == 1.0
    # 5 features < 50 dims: no PCA
    assert r["dims_used"] == 5
    assert r["explained_variance"] == 1.0
    # persistence and dbcv are hdbscan's own numbers
    reference = hdbscan.HDBSCAN(min_cluster_size=10, gen_min_span_tree=True).fit(vectors)
    assert r["persistence"] == pytest.approx(np.mean(reference.cluster_persistence_))
    assert r["dbcv"] == pytest.approx(reference.relative_validity_)
    assert 0.5 < r["dbcv"] <= 1.0


def test_chance_level_of_true_labels_is_far_below_the_ari_and_of_random_labels_is_the_ari():
    vectors, labels = _blobs(per_blob=60)
    true = HdbscanProbe().measure(_layer(vectors, labels), CONTEXT)
    assert true["ari"] == pytest.approx(1.0) and true["ami"] == pytest.approx(1.0)
    assert abs(true["ari_chance_mean"]) < 0.02 and 0 < true["ari_chance_std"] < 0.02
    assert true["ari_chance_p"] == pytest.approx(1 / 200)  # no shuffle reaches it: the smallest p of 199
    shuffled = np.random.default_rng(5).permutation(labels)
    random = HdbscanProbe().measure(_layer(vectors, shuffled), CONTEXT)
    assert abs(random["ari"]) < 0.05 and abs(random["ami"]) < 0.05 and random["nmi"] > random["ami"]
    assert abs(random["ari_chance_mean"]) < 0.02 and random["ari_chance_p"] > 0.1
    off = HdbscanProbe(permutations=0).measure(_layer(vectors, labels), CONTEXT)
    assert math.isnan(off["ari_chance_p"]) and off["ari"] == true["ari"]


def test_shuffled_ari_is_scikit_learns_ari_of_the_shuffled_labels():
    from bnprobe.probes._chance import shuffled_ari

    rng = np.random.default_rng(2)
    labels, clusters = rng.integers(0, 4, 300), rng.integers(-1, 5, 300)
    values = shuffled_ari(labels, clusters, 6, seed=9)
    shuffles = np.random.default_rng(9).permuted(np.broadcast_to(labels, (6, 300)), axis=1)
    assert values == pytest.approx([adjusted_rand_score(s, clusters) for s in shuffles], abs=1e-12)


def test_noise_counts_as_its_own_cluster_in_ari_but_not_in_purity():
    vectors, labels = _blobs()
    # two isolated points, of class 0: HDBSCAN leaves them as noise
    vectors = np.vstack([vectors, [[50, 50, 50, 50, 50], [-50, 0, 0, 0, -50]]])
    labels = np.append(labels, [0, 0])
    r = HdbscanProbe().measure(_layer(vectors, labels), CONTEXT)
    assert r["n_clusters"] == 3
    assert r["noise_fraction"] == pytest.approx(2 / 92)
    assert r["purity"] == 1.0
    expected = np.append(np.repeat([0, 1, 2], 30), [-1, -1])
    assert r["ari"] == pytest.approx(adjusted_rand_score(labels, expected))
    assert r["ari"] < 1.0


def test_purity_is_the_majority_share_inside_clusters():
    vectors, _ = _blobs()
    # blob 0: 20 of class 0 and 10 of class 1; blob 1: all class 2; blob 2: 15 class 3, 15 class 4
    labels = np.array([0] * 20 + [1] * 10 + [2] * 30 + [3] * 15 + [4] * 15)
    r = HdbscanProbe().measure(_layer(vectors, labels), CONTEXT)
    assert r["n_clusters"] == 3
    assert r["purity"] == pytest.approx((20 + 30 + 15) / 90)


@pytest.mark.parametrize("min_samples", [None, 4])
def test_exact_mode_gives_hdbscans_labels_on_the_raw_vectors(min_samples):
    vectors, labels = _relu_vectors(400, 200)
    probe = HdbscanProbe(exact=True, min_samples=min_samples)
    assert probe.pca_dims is None
    plain = hdbscan.HDBSCAN(min_cluster_size=10, min_samples=min_samples).fit(vectors).labels_
    found = probe.cluster(vectors, CPU)
    assert plain.max() >= 1  # more than one cluster, or the check says little
    np.testing.assert_array_equal(found.labels, plain)
    assert found.dims == 200


def test_euclidean_distances_are_exact_symmetric_with_zero_for_duplicates():
    vectors, _ = _relu_vectors(300, 40, seed=3)
    vectors[7] = vectors[150]
    d = euclidean_distances(vectors, CPU)
    x = vectors.astype(np.float64)
    reference = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(d, reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(d, d.T)
    assert d[7, 150] == 0.0 and np.all(np.diag(d) == 0.0)


def test_pca_reduces_to_dims_and_keeps_the_variance_svd_says():
    rng = np.random.default_rng(0)
    vectors = (rng.normal(0, 1, (200, 6)) @ rng.normal(0, 1, (6, 100)) + rng.normal(0, 0.1, (200, 100)))
    labels = np.zeros(200, dtype=int)
    r = HdbscanProbe(dims=10).measure(_layer(vectors, labels), CONTEXT)
    assert r["dims_used"] == 10
    centred = vectors - vectors.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    assert r["explained_variance"] == pytest.approx((s[:10] ** 2).sum() / (s**2).sum(), rel=1e-5)


def test_randomized_pca_matches_the_exact_one_and_is_deterministic():
    rng = np.random.default_rng(1)
    vectors = (rng.normal(0, 1, (700, 8)) @ rng.normal(0, 3, (8, 600))
               + rng.normal(0, 0.1, (700, 600))).astype(np.float32)
    projected, kept = pca_reduce(vectors, 5, CPU)  # 700 x 600: randomized branch
    again, _ = pca_reduce(vectors, 5, CPU)
    np.testing.assert_array_equal(projected, again)
    centred = vectors.astype(np.float64) - vectors.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    assert projected.shape == (700, 5)
    assert kept == pytest.approx((s[:5] ** 2).sum() / (s**2).sum(), rel=1e-4)
    # the same components up to sign
    np.testing.assert_allclose(np.abs(projected), np.abs(u[:, :5] * s[:5]), rtol=1e-3, atol=1e-2)


def test_dims_auto_means_50_normally_and_raw_vectors_in_exact_mode():
    assert HdbscanProbe().pca_dims == 50
    assert HdbscanProbe(exact=True).pca_dims is None
    assert HdbscanProbe(exact=True, dims=20).pca_dims == 20
    assert HdbscanProbe(dims=None).pca_dims is None
    assert HdbscanProbe(exact=True).key == "hdbscan(exact=True)"


def test_probes_come_from_the_registry_and_specs():
    hd, bp = build_probes("hdbscan(exact=true, dims=none, min_cluster_size=5),binary_patterns(reduce=max)")
    assert isinstance(hd, HdbscanProbe) and (hd.exact, hd.dims, hd.min_cluster_size) == (True, None, 5)
    assert isinstance(bp, BinaryPatternsProbe) and bp.reduce == "max"
    assert get_probe("hdbscan").key_metric == "ari"


@pytest.mark.parametrize(("params", "message"), [
    ({"min_cluster_size": 1}, "min_cluster_size must be >= 2"),
    ({"min_cluster_size": 2.5}, "min_cluster_size must be an integer"),
    ({"min_samples": 0}, "min_samples must be >= 1"),
    ({"dims": 0}, "dims must be >= 1"),
    ({"dims": "all"}, "dims must be an integer, None or 'auto'"),
    ({"exact": "yes"}, "exact must be true or false"),
    ({"clusters": 3}, "unknown parameter"),
])
def test_hdbscan_parameter_errors(params, message):
    with pytest.raises(BnprobeError, match=message):
        HdbscanProbe(**params)


@pytest.mark.parametrize("exact", [False, True])
def test_dead_layer_is_all_noise(exact):
    r = HdbscanProbe(exact=exact).measure(_layer(np.zeros((60, 70)), np.arange(60) % 3), CONTEXT)
    assert r["n_clusters"] == 0
    assert r["noise_fraction"] == 1.0
    assert r["ari"] == 0.0 and r["nmi"] == 0.0
    assert math.isnan(r["purity"]) and math.isnan(r["persistence"]) and math.isnan(r["dbcv"])


def test_fewer_samples_than_min_cluster_size_is_all_noise():
    r = HdbscanProbe().measure(_layer(np.eye(4, 8), [0, 1, 0, 1]), CONTEXT)
    assert (r["n_clusters"], r["noise_fraction"]) == (0, 1.0)


def test_non_finite_samples_are_noise_and_the_rest_is_clustered():
    vectors, labels = _blobs()
    vectors[0, 0] = np.nan
    vectors[40, 2] = np.inf
    r = HdbscanProbe().measure(_layer(vectors, labels), CONTEXT)
    assert r["n_clusters"] == 3
    assert r["noise_fraction"] == pytest.approx(2 / 90)
    assert r["purity"] == 1.0


def test_labels_must_match_the_vectors():
    with pytest.raises(BnprobeError, match="5 labels for 4 vectors"):
        HdbscanProbe().measure(_layer(np.ones((4, 3)), np.arange(5)), CONTEXT)
    with pytest.raises(BnprobeError, match="no samples"):
        BinaryPatternsProbe().measure(_layer(np.ones((0, 3)), np.arange(0)), CONTEXT)


# --------------------------------------------------------------------------------------------------
# binary_patterns

# 4 samples, 3 channels, 2 positions (shape (3, 1, 2)), classes [0, 0, 1, 1].
MAPS = np.array([
    [[[1.0, 0.0]], [[0.0, 0.0]], [[2.0, 2.0]]],
    [[[0.5, 0.5]], [[0.0, 0.0]], [[0.0, 0.0]]],
    [[[0.0, 0.0]], [[0.0, 0.0]], [[3.0, 0.0]]],
    [[[0.0, 0.2]], [[0.0, 0.0]], [[1.0, 1.0]]],
])
CLASSES = [0, 0, 1, 1]


def test_binary_patterns_by_hand():
    """The default: each channel is active above its own median here (2 classes: quantile 1 - 1/2)."""
    r = BinaryPatternsProbe().measure(_layer(MAPS.reshape(4, -1), CLASSES, shape=(3, 1, 2)), CONTEXT)
    # channel means: 0 [0.5, 0.5, 0, 0.1] (median 0.3), 1 all 0 (median 0), 2 [2, 0, 1.5, 1] (median 1.25)
    # active sets: channel 0 {0, 1}, channel 1 {}, channel 2 {0, 2}
    assert r["active_set_size"] == pytest.approx((2 / 4 + 0 + 2 / 4) / 3)
    assert r["active_set_purity"] == pytest.approx((1.0 + 1 / 2) / 2)
    assert r["dead_channel_fraction"] == pytest.approx(1 / 3)
    # quantile=0.7: channel 0 above 0.5 -> {}, channel 2 above 1.55 -> {0}
    r = BinaryPatternsProbe(quantile=0.7).measure(_layer(MAPS.reshape(4, -1), CLASSES, shape=(3, 1, 2)), CONTEXT)
    assert (r["active_set_size"], r["active_set_purity"]) == (pytest.approx(1 / 12), 1.0)
    assert r["dead_channel_fraction"] == pytest.approx(2 / 3)


def test_binary_patterns_eps_0_is_the_old_rule_the_relu_fired():
    r = BinaryPatternsProbe(eps=0).measure(_layer(MAPS.reshape(4, -1), CLASSES, shape=(3, 1, 2)), CONTEXT)
    # active sets: channel 0 {0, 1, 3}, channel 1 {}, channel 2 {0, 2, 3}
    assert r["active_set_size"] == pytest.approx((3 / 4 + 0 + 3 / 4) / 3)
    # channel 0: classes 0, 0, 1 -> 2/3; channel 2: classes 0, 1, 1 -> 2/3; channel 1 has no set
    assert r["active_set_purity"] == pytest.approx(2 / 3)
    assert r["dead_channel_fraction"] == pytest.approx(1 / 3)


def test_binary_patterns_eps_and_reduce():
    vectors = MAPS.reshape(4, -1)
    # mean > 0.4: channel 0 {0, 1}, channel 2 {0, 2, 3}
    r = BinaryPatternsProbe(eps=0.4).measure(_layer(vectors, CLASSES, shape=(3, 1, 2)), CONTEXT)
    assert r["active_set_size"] == pytest.approx((2 / 4 + 3 / 4) / 3)
    assert r["active_set_purity"] == pytest.approx((1.0 + 2 / 3) / 2)
    # max > 1.5: channel 0 {}, channel 2 {0, 2}
    r = BinaryPatternsProbe(eps=1.5, reduce="max").measure(_layer(vectors, CLASSES, shape=(3, 1, 2)), CONTEXT)
    assert r["active_set_size"] == pytest.approx((0 + 0 + 2 / 4) / 3)
    assert r["active_set_purity"] == pytest.approx(1 / 2)
    assert r["dead_channel_fraction"] == pytest.approx(2 / 3)


def test_binary_patterns_on_channel_means_equal_the_whole_maps():
    means = MAPS.mean(axis=(2, 3))
    whole = BinaryPatternsProbe(eps=0.4).measure(_layer(MAPS.reshape(4, -1), CLASSES, (3, 1, 2)), CONTEXT)
    meaned = BinaryPatternsProbe(eps=0.4).measure(_layer(means, CLASSES, (3, 1, 2)), CONTEXT)
    assert meaned == pytest.approx(whole)
    with pytest.raises(BnprobeError, match="reduce='max' needs whole feature maps"):
        BinaryPatternsProbe(reduce="max").measure(_layer(means, CLASSES, (3, 1, 2)), CONTEXT)
    with pytest.raises(BnprobeError, match="5 features fit neither"):
        BinaryPatternsProbe().measure(_layer(np.ones((4, 5)), CLASSES, (3, 1, 2)), CONTEXT)


@pytest.mark.parametrize("params", [{}, {"eps": 0.0}])
def test_binary_patterns_dead_layer(params):
    probe = BinaryPatternsProbe(**params)
    layer = _layer(np.zeros((4, 6)), CLASSES, shape=(3, 1, 2))
    r = probe.measure(layer, CONTEXT)
    assert r["active_set_size"] == 0.0
    assert math.isnan(r["active_set_purity"])
    assert r["dead_channel_fraction"] == 1.0
    assert probe.notes(layer, CONTEXT) == {"degenerate": ONE_PATTERN_NOTE}  # every sample: no channel on


def test_binary_patterns_non_finite_channel_is_dead_by_default():
    vectors = MAPS.mean(axis=(2, 3))
    vectors[1, 0] = np.nan
    r = BinaryPatternsProbe().measure(_layer(vectors, CLASSES, (3, 1, 2)), CONTEXT)
    assert r["dead_channel_fraction"] == pytest.approx(2 / 3) and r["active_set_purity"] == 0.5


def _class_channels(seed=0, classes=10, per_class=4, samples=1000, positions=16):
    """What a trained ReLU CNN gives: every map is ReLU of noise over a positive bias, so its spatial
    mean is above 0 on every sample, and each class switches its own ``per_class`` channels on strongly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    maps = rng.normal(0.3, 1.0, (samples, classes * per_class, positions))
    own = np.arange(classes * per_class)[None, :] // per_class == labels[:, None]
    maps += 2.0 * own[:, :, None]
    maps = np.maximum(maps, 0.0)
    return maps.reshape(samples, -1), labels, (classes * per_class, 1, positions)


def test_binary_patterns_default_finds_class_channels_where_eps_0_is_degenerate_and_says_so():
    vectors, labels, shape = _class_channels()
    layer = _layer(vectors, labels, shape)
    largest_share = np.bincount(labels).max() / labels.size
    new, old = BinaryPatternsProbe(), BinaryPatternsProbe(eps=0)
    found = new.measure(layer, CONTEXT)
    assert found["active_set_purity"] > 0.9 > 5 * largest_share
    assert found["active_set_size"] == pytest.approx(0.1, abs=0.01) and found["dead_channel_fraction"] == 0.0
    assert new.notes(layer, CONTEXT) == {}
    blind = old.measure(layer, CONTEXT)
    assert blind["active_set_size"] == 1.0 and blind["dead_channel_fraction"] == 0.0
    assert blind["active_set_purity"] == pytest.approx(largest_share)  # every channel: all the samples
    assert old.notes(layer, CONTEXT) == {"degenerate": ALWAYS_ON_NOTE}
    # a channel that is not the class's but noise only: chance purity, not 1
    noise = BinaryPatternsProbe().measure(_layer(np.abs(np.random.default_rng(1).normal(size=(1000, 8))),
                                                 labels, (8,)), CONTEXT)
    assert noise["active_set_purity"] < 2 * largest_share


def test_binary_patterns_degenerate_notes():
    on = np.ones((100, 3), dtype=bool)
    assert degenerate_note(on) == ALWAYS_ON_NOTE
    mostly = on.copy()
    mostly[np.arange(10), np.arange(10) % 3] = False  # 10 samples each miss one channel: 10 patterns, 97 % on
    assert degenerate_note(mostly) == MOSTLY_ON_NOTE
    one = np.zeros((100, 3), dtype=bool)
    one[:4, 0] = True  # 96 samples share the all-off pattern
    assert degenerate_note(one) == ONE_PATTERN_NOTE
    one[:6, 1] = True  # 94 of them now: not degenerate
    assert degenerate_note(one) is None


def test_a_degenerate_binary_pattern_is_one_line_in_the_report():
    """Through probe_activations and the terminal report: eps=0 on a trained-like ReLU layer is noted
    in one line, at every layer; the default is not."""
    from rich.console import Console

    import bnprobe

    vectors, labels, shape = _class_channels(samples=300)
    maps = torch.from_numpy(vectors.reshape(300, *shape)).float()
    runs = [bnprobe.ActivationRun({"a": maps, "b": maps * 3 + 0.5}, variant, 0) for variant in ("bn", "identity")]
    results = bnprobe.probe_activations(runs, labels, "binary_patterns,binary_patterns(eps=0)", activation="relu")
    assert {run.notes.get("binary_patterns") for run in results.runs} == {None}
    console = Console(record=True, width=100)
    bnprobe.render(results, console)
    text = " ".join(console.export_text().split())
    line = f"degenerate: {ALWAYS_ON_NOTE} at every layer"
    assert text.count(line) == 1 and text.count("degenerate:") == 1
    assert text.index("binary_patterns(eps=0.0) — ") < text.index(line)


@pytest.mark.parametrize(("params", "message"), [
    ({"eps": "small"}, "eps must be a finite number"),
    ({"eps": -1}, "eps must be >= 0.0, got -1"),
    ({"reduce": "median"}, "reduce must be one of mean, max"),
    ({"quantile": "top"}, "quantile must be a number in \\(0, 1\\) or 'auto', got 'top'"),
    ({"quantile": 1}, "quantile must be in \\(0, 1\\), got 1"),
    ({"quantile": 0.0}, "quantile must be in \\(0, 1\\), got 0.0"),
    ({"quantile": float("nan")}, "quantile must be a finite number"),
    ({"quantile": 0.9, "eps": 0}, "give eps \\(an absolute threshold\\) or quantile \\(one per channel\\), not both"),
    ({"threshold": 0.5}, "unknown parameter"),
])
def test_binary_patterns_parameter_errors(params, message):
    with pytest.raises(BnprobeError, match=message):
        BinaryPatternsProbe(**params)
