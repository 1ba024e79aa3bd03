"""What a clustering score would be by chance: the ARI of fixed clusters against shuffled class labels.

A clustering's adjusted Rand index is 0 in expectation for a random labelling, but its spread around 0
depends on the number of clusters, their sizes and the samples.  The permutation test keeps the
clusters and shuffles the labels: both partitions keep their sizes, so of the ARI's terms only the
pair count ``Σ_ij C(n_ij, 2)`` of the contingency table changes, and one shuffle costs one recount of
that table (``np.bincount``), not a clustering.
"""

from __future__ import annotations

import math

import numpy as np


def _pairs(counts: np.ndarray) -> np.ndarray:
    """``C(count, 2)`` summed over the last axis, in float64."""
    counts = counts.astype(np.float64)
    return (counts * (counts - 1) / 2).sum(axis=-1)


def shuffled_ari(labels: np.ndarray, clusters: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """The ARI of ``clusters`` against ``permutations`` seeded shuffles of ``labels``, one value each.

    The same formula as scikit-learn's ``adjusted_rand_score``; when neither partition has a pair
    structure to compare (the ARI's denominator is 0) every value is the ARI scikit-learn gives then, 1.
    """
    _, classes = np.unique(labels, return_inverse=True)
    _, groups = np.unique(clusters, return_inverse=True)
    n, n_classes, n_groups = classes.size, int(classes.max()) + 1, int(groups.max()) + 1
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(classes, (permutations, n)), axis=1)
    cells = (np.arange(permutations)[:, None] * n_groups + groups) * n_classes + shuffled
    table = np.bincount(cells.ravel(), minlength=permutations * n_groups * n_classes)
    index = _pairs(table.reshape(permutations, n_groups * n_classes))
    rows = float(_pairs(np.bincount(groups)))
    columns = float(_pairs(np.bincount(classes)))
    expected = rows * columns / (n * (n - 1) / 2)
    top = (rows + columns) / 2 - expected
    if top == 0:
        return np.ones(permutations)
    return (index - expected) / top


def ari_chance(labels: np.ndarray, clusters: np.ndarray, observed: float, permutations: int,
               seed: int) -> dict[str, float]:
    """``ari_chance_mean``, ``ari_chance_std`` (ddof 1) and ``ari_chance_p`` of ``observed`` (NaN with no
    permutations): the chance level a clustering's ARI is read against (module docstring)."""
    if permutations == 0 or labels.size < 2:
        return {"ari_chance_mean": math.nan, "ari_chance_std": math.nan, "ari_chance_p": math.nan}
    values = shuffled_ari(labels, clusters, permutations, seed)
    at_least = int(np.count_nonzero(values >= observed - 1e-12))
    return {"ari_chance_mean": float(values.mean()),
            "ari_chance_std": float(values.std(ddof=1)) if permutations > 1 else math.nan,
            "ari_chance_p": (1 + at_least) / (permutations + 1)}
