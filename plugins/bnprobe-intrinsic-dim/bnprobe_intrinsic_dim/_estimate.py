"""The arithmetic: distinct vectors, a bounded seeded subsample, the two nearest neighbours, skdim's fit.

Every estimator here is scikit-dimension's (``skdim.id``), fitted with its own defaults.  What this module
adds is what a layer's activations need before any of them is fitted:

* **exact duplicates are dropped** (one copy of each distinct vector is kept): ReLU layers give many --
  inputs whose every unit is off share one all-zero pattern -- and a duplicate's nearest-neighbour distance
  is 0, which makes TwoNN's ratio ``r2 / r1`` undefined and every other neighbour estimator's log-distances
  infinite.  skdim's own TwoNN drops such points only when its float64 distance comes out exactly 0 (which
  the Gram formula it uses in high dimension does not promise), and keeps the points whose neighbours are a
  duplicated pair (ratio 1, a spurious pull towards high dimension);
* at most ``max_samples`` distinct vectors are kept, a seeded uniform subsample (the estimators are
  quadratic in the samples or worse);
* for TwoNN, the two nearest-neighbour distances ``r1 < r2`` of every kept vector are found on the run's
  device (candidates from a float32 Gram-form distance, blocked; then the candidates' distances recomputed
  from their differences in float64), and handed to ``skdim.id.TwoNN(dist=True)``, which fits them exactly
  as it fits its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bnprobe.errors import BnprobeError
from bnprobe_intrinsic_dim._names import MIN_DISTINCT

CANDIDATES = 3
"""Nearest candidates per vector kept from the float32 Gram-form distances, to be recomputed exactly
(one more than the two TwoNN needs, for a near-tie the Gram form's rounding swaps)."""
BLOCK_ELEMENTS = 1 << 24
"""Distance values held at once on the device (64 MiB of float32)."""


@dataclass(frozen=True)
class Estimate:
    """One layer's estimate and what it was made on."""

    dimension: float
    distinct: int
    """Distinct vectors among the layer's samples."""
    used: int
    """Distinct vectors the estimator was fitted on (``min(distinct, max_samples)``)."""


def distinct_subsample(vectors: torch.Tensor, max_samples: int, seed: int) -> tuple[torch.Tensor, int]:
    """One copy of each distinct row of ``vectors``, at most ``max_samples`` of them, and how many were distinct.

    ``torch.unique`` returns the rows sorted, so the subsample depends on the set of vectors, not their order.
    """
    unique = torch.unique(vectors, dim=0)
    distinct = unique.shape[0]
    if distinct > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(distinct, max_samples, replace=False))
        unique = unique[torch.from_numpy(keep).to(unique.device)]
    return unique, distinct


def two_nearest(vectors: torch.Tensor) -> np.ndarray:
    """``(samples, 2)`` float64: each row's distances to its nearest and second-nearest other row.

    The rows must be distinct (so ``r1 > 0``).  Candidates come from ``|a|^2 + |b|^2 - 2 a.b`` in float32
    on centred rows, one block of rows at a time (one matrix product: the cost); the candidates' distances
    are then recomputed from the differences of the rows as given, summed in float64 -- relative error
    about 1e-7 even for near-duplicates, where the Gram form has no digits left -- so rounding in the Gram
    form can at worst swap near-ties among the candidates, never bias ``r1`` or ``r2``.
    """
    given = vectors.to(torch.float32)
    x = given - given.mean(dim=0)
    samples, features = x.shape
    norms = x.square().sum(dim=1)
    k = min(CANDIDATES, samples - 1)
    rows_per_block = max(1, BLOCK_ELEMENTS // max(samples, k * features))
    nearest = []
    for start in range(0, samples, rows_per_block):
        stop = min(start + rows_per_block, samples)
        squared = torch.addmm(norms[None, :], x[start:stop], x.T, alpha=-2.0).add_(norms[start:stop, None])
        squared[torch.arange(stop - start), torch.arange(start, stop)] = math.inf  # not its own neighbour
        index = squared.topk(k, dim=1, largest=False).indices
        differences = given[start:stop, None, :] - given[index]
        exact = torch.linalg.vector_norm(differences, dim=2, dtype=torch.float64)
        nearest.append(exact.sort(dim=1).values[:, :2])
    return torch.cat(nearest).cpu().numpy()


def estimate(vectors: torch.Tensor, estimator: str, max_samples: int, seed: int) -> Estimate:
    """``estimator``'s intrinsic dimension of the rows of ``vectors`` (see the module docstring).

    NaN with fewer than :data:`MIN_DISTINCT` distinct rows, 0 for a constant layer (one distinct row: a point).
    """
    import skdim

    x, distinct = distinct_subsample(vectors, max_samples, seed)
    used = x.shape[0]
    if distinct == 1:
        return Estimate(0.0, distinct, used)
    if used < MIN_DISTINCT:
        return Estimate(math.nan, distinct, used)
    if estimator == "TwoNN":
        fitted = skdim.id.TwoNN(dist=True).fit(two_nearest(x))
    else:
        try:
            fitted = getattr(skdim.id, estimator)().fit(x.to(torch.float64).cpu().numpy())
        except (ValueError, np.linalg.LinAlgError) as error:
            raise BnprobeError(f"skdim.id.{estimator} failed on {used} distinct vectors of "
                               f"{x.shape[1]} features: {str(error).splitlines()[0]}") from None
    dimension = float(fitted.dimension_)
    return Estimate(dimension if math.isfinite(dimension) else math.nan, distinct, used)
