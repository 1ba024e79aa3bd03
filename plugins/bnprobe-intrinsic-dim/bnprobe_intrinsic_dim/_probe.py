"""``intrinsic_dim``: how many dimensions the manifold a layer's representation lies on has."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from bnprobe.params import check_choice, check_int
from bnprobe.probes.base import LayerData, Need, Probe, ProbeContext
from bnprobe.probes.metrics import Metric
from bnprobe_intrinsic_dim._names import ESTIMATORS, MIN_DISTINCT

MAX_SAMPLES = 5000
"""Distinct vectors fitted at most by default: a study's default ``--samples``, so it subsamples only above."""


class IntrinsicDimProbe(Probe):
    """scikit-dimension's intrinsic dimension (TwoNN by default) of a layer's distinct per-sample vectors.

    ``estimator`` picks one of :data:`ESTIMATORS` (case-insensitive), fitted with skdim's defaults;
    ``max_samples`` bounds the distinct vectors it is fitted on (a subsample seeded with ``seed`` above it).
    Exact duplicate vectors are dropped first (:mod:`bnprobe_intrinsic_dim._estimate` says why).
    """

    description: ClassVar[str] = "intrinsic dimension (scikit-dimension; TwoNN by default) of the distinct vectors"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "intrinsic_dim"
    metrics: ClassVar[dict[str, Metric]] = {
        "intrinsic_dim": Metric(
            "intrinsic dimension of the layer's distinct per-sample vectors by the chosen skdim.id estimator; "
            "TwoNN (Facco et al. 2017, skdim defaults: linear fit of -log(1-F(mu)) on log mu, mu = r2/r1, the "
            "10 % largest ratios discarded). Exact duplicates dropped first; a seeded subsample of max_samples "
            f"above that; 0 for a constant layer; null below {MIN_DISTINCT} distinct vectors or for "
            "non-finite values",
            "0 to about the layer's dimension (a real number; noise pushes it up)"),
        "intrinsic_dim_ratio": Metric("intrinsic_dim over the layer's dimension (features of its flattened "
                                      "vector, channels x height x width)", "0 to about 1"),
        "duplicate_fraction": Metric("fraction of the probed samples whose vector exactly equals an earlier "
                                     "sample's (dropped before estimating), e.g. inputs with the same ReLU "
                                     "pattern of zeros", "0 to 1 - 1/samples"),
        "samples_used": Metric("distinct vectors the estimator was fitted on: min(distinct vectors, max_samples)",
                               "0 to max_samples"),
    }

    def __init__(self, *, estimator: str = "TwoNN", max_samples: int = MAX_SAMPLES, seed: int = 0,
                 **unknown: Any) -> None:
        super().__init__(**unknown)
        owner = f"probe {self.name}"
        canonical = {name.lower(): name for name in ESTIMATORS}
        named = canonical.get(estimator.lower(), estimator) if isinstance(estimator, str) else estimator
        self.estimator = check_choice(owner, "estimator", named, ESTIMATORS)
        self.max_samples = check_int(owner, "max_samples", max_samples, minimum=MIN_DISTINCT)
        self.seed = check_int(owner, "seed", seed, minimum=0)

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """The four numbers; the distinct vectors and TwoNN's neighbour search are found on the run's device."""
        import torch

        from bnprobe_intrinsic_dim._estimate import estimate  # torch and skdim: only when a layer is measured

        vectors = layer.vectors_tensor(context.device)
        samples, features = vectors.shape
        if samples == 0 or not bool(torch.isfinite(vectors).all()):
            return dict.fromkeys(self.metrics, math.nan)
        result = estimate(vectors, self.estimator, self.max_samples, self.seed)
        return {"intrinsic_dim": result.dimension, "intrinsic_dim_ratio": result.dimension / features,
                "duplicate_fraction": 1.0 - result.distinct / samples, "samples_used": float(result.used)}
