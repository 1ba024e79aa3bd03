"""The ``knn`` backend of the hdbscan probe: its spanning tree is hdbscan's exact one, so its clusters,
persistence and DBCV are hdbscan's on the same vectors; ``backend='hdbscan'`` keeps hdbscan's own search."""

import math

import hdbscan
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from test_clustering import CONTEXT, _blobs, _layer, _relu_vectors

from bnprobe.errors import BnprobeError
from bnprobe.probes._clustering import HdbscanProbe
from bnprobe.probes._knn_tree import mutual_reachability_tree, nearest_neighbours

CPU = torch.device("cpu")


def _exact_hdbscan(vectors, min_samples=None):
    return hdbscan.HDBSCAN(min_cluster_size=10, min_samples=min_samples, gen_min_span_tree=True,
                           approx_min_span_tree=False).fit(vectors.astype(np.float64))


def _assert_same_partition(found, reference):
    """The same noise and the same clusters, whatever number each cluster got (ties in the tree's order
    can number them differently)."""
    np.testing.assert_array_equal(found < 0, reference < 0)
    kept, known = found[found >= 0].tolist(), reference[reference >= 0].tolist()
    pairs = set(zip(kept, known, strict=True))
    assert len(pairs) == len(set(kept)) == len(set(known))


def _with_outliers():
    """Three blobs and two far points whose nearest neighbours span two blobs: the neighbour graph alone
    would join those blobs through the outliers, far above the blobs' own distance."""
    vectors, labels = _blobs()
    return np.vstack([vectors, [[50, 50, 50, 50, 50], [-50, 0, 0, 0, -50]]]), np.append(labels, [0, 0])


@pytest.mark.parametrize("case", ["outliers", "relu", "two_gaussians"])
def test_the_tree_weighs_what_hdbscans_exact_tree_weighs(case):
    rng = np.random.default_rng(4)
    if case == "outliers":
        vectors = _with_outliers()[0]
    elif case == "relu":
        vectors = _relu_vectors(600, 30)[0]
    else:
        vectors = rng.normal(size=(800, 6))
        vectors[:400] += 3.0
    tree = mutual_reachability_tree(torch.from_numpy(np.asarray(vectors, dtype=np.float64)), 10)
    reference = _exact_hdbscan(np.asarray(vectors)).minimum_spanning_tree_.to_numpy()
    assert tree.shape == (len(vectors) - 1, 3)
    assert np.all(np.diff(tree[:, 2]) >= 0)  # lightest first, as single linkage takes them
    np.testing.assert_allclose(tree[:, 2], np.sort(reference[:, 2]), rtol=1e-12, atol=1e-12)
    joined = len(set(tree[:, 0].astype(int)) | set(tree[:, 1].astype(int)))
    assert joined == len(vectors)


def test_the_knn_backend_gives_hdbscans_labels_persistence_and_dbcv():
    vectors, labels = _relu_vectors(500, 40, seed=2)
    found = HdbscanProbe(backend="knn", dims=None).cluster(vectors, CPU)
    reference = _exact_hdbscan(vectors)
    assert reference.labels_.max() >= 1  # several clusters, or the check says little
    _assert_same_partition(found.labels, reference.labels_)
    np.testing.assert_allclose(np.sort(found.persistence), np.sort(reference.cluster_persistence_), rtol=1e-12)
    assert found.dbcv == pytest.approx(reference.relative_validity_, rel=1e-12)


def test_with_tied_weights_the_tree_weighs_the_same_and_the_labels_nearly_agree():
    # min_samples=4: many edges weigh a core distance, so equal-weight trees differ in which tie they take
    vectors, _ = _relu_vectors(500, 40, seed=2)
    tree = mutual_reachability_tree(torch.from_numpy(vectors.astype(np.float64)), 4)
    reference = _exact_hdbscan(vectors, min_samples=4)
    assert np.unique(tree[:, 2]).size < tree.shape[0]  # ties, or the case says little
    np.testing.assert_allclose(tree[:, 2], np.sort(reference.minimum_spanning_tree_.to_numpy()[:, 2]), rtol=1e-12)
    found = HdbscanProbe(backend="knn", dims=None, min_samples=4).cluster(vectors, CPU)
    assert adjusted_rand_score(found.labels, reference.labels_) > 0.99


def test_far_outliers_are_noise_as_hdbscan_leaves_them():
    vectors, labels = _with_outliers()
    knn = HdbscanProbe(backend="knn").measure(_layer(vectors.astype(np.float32), labels), CONTEXT)
    plain = HdbscanProbe(backend="hdbscan").measure(_layer(vectors.astype(np.float32), labels), CONTEXT)
    assert knn["n_clusters"] == 3 and knn["noise_fraction"] == pytest.approx(2 / 92)
    assert knn == pytest.approx(plain, nan_ok=True)


def test_duplicates_and_the_neighbour_lists():
    rng = np.random.default_rng(0)
    vectors = np.zeros((200, 20))
    vectors[100:] = rng.normal(3, 1, (100, 20))  # 100 identical dead-ReLU samples, then a blob
    index, distance = nearest_neighbours(torch.from_numpy(vectors), 15)
    assert not np.any(index == np.arange(200)[:, None])  # never the sample itself
    assert np.all(distance[:100] == 0.0) and np.all(np.diff(distance, axis=1) >= 0)
    found = HdbscanProbe(backend="knn", dims=None).cluster(vectors, CPU)
    reference = _exact_hdbscan(vectors)
    _assert_same_partition(found.labels, reference.labels_)
    assert found.dbcv == pytest.approx(reference.relative_validity_)


def test_the_hdbscan_backend_is_hdbscans_own_search():
    vectors, _ = _relu_vectors(400, 30, seed=5)
    found = HdbscanProbe(backend="hdbscan", dims=None).cluster(vectors, CPU)
    np.testing.assert_array_equal(found.labels, hdbscan.HDBSCAN(min_cluster_size=10).fit(vectors).labels_)


def test_too_few_samples_for_min_samples_are_all_noise():
    vectors, labels = _relu_vectors(12, 5)
    r = HdbscanProbe(backend="knn", min_samples=12).measure(_layer(vectors, labels), CONTEXT)
    assert r["n_clusters"] == 0 and r["noise_fraction"] == 1 and math.isnan(r["dbcv"])


def test_an_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(BnprobeError, match="backend.*knn.*hdbscan"):
        HdbscanProbe(backend="fast")
