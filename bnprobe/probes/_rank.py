"""How many dimensions a layer's representation uses: effective rank, stable rank and PCA counts.

Every number is a function of the singular values ``s_i`` of the layer's **centred** vectors (each
feature minus its mean over the probed samples: the spread of the representation, not its offset),
``lambda_i = s_i^2`` being the eigenvalues of their Gram matrix (:mod:`bnprobe.probes._spectrum`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.params import check_choice
from bnprobe.probes._clustering import _checked_labels
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes._spectrum import Spectrum, centred_float64, estimated_spectrum, exact_spectrum
from bnprobe.probes.metrics import Metric

EXPLAINED = 0.99
"""The share of the variance ``pca_components_99`` counts components up to."""
EXACT_MAX = 2048
"""``method="auto"`` takes the exact spectrum while ``min(samples, features)`` is at most this (about a
second on two CPU cores), the estimate above it."""
METHODS = ("auto", "exact", "estimate")


def rank_metrics(spectrum: Spectrum) -> dict[str, float]:
    """The ``rank`` probe's four numbers from a (weighted) spectrum; all 0 for a constant layer."""
    values, weights = spectrum.values, spectrum.weights
    if spectrum.total <= 0 or not (values > 0).any():
        return dict.fromkeys(RankProbe.metrics, 0.0)
    live = values > 0
    singular, counts = np.sqrt(values[live]), weights[live]
    nuclear = float((counts * singular).sum())
    entropy = math.log(nuclear) - float((counts * singular * np.log(singular)).sum()) / nuclear
    components = _components(values[live], counts, EXPLAINED * float((counts * values[live]).sum()))
    return {
        "effective_rank": math.exp(entropy),
        "stable_rank": spectrum.total / float(values.max()),
        "pca_components_99": components,
        "pca_fraction_99": components / spectrum.size,
    }


def _components(values: np.ndarray, counts: np.ndarray, target: float) -> float:
    """Fewest of the largest eigenvalues (``counts[i]`` of size ``values[i]``) whose sum reaches ``target``."""
    order = np.argsort(-values, kind="stable")
    values, counts = values[order], counts[order]
    mass = np.cumsum(counts * values)
    i = min(int(np.searchsorted(mass, target)), len(values) - 1)
    before_mass = float(mass[i - 1]) if i else 0.0
    before = float(counts[:i].sum())
    return float(round(before + min(math.ceil((target - before_mass) / values[i]), math.ceil(counts[i]))))


@register_probe("rank")
class RankProbe(Probe):
    """Effective rank, stable rank and the 99 % PCA count of a layer's centred per-sample vectors.

    With ``s_1 >= s_2 >= ...`` the singular values of the centred ``(samples, features)`` vectors:

    * ``effective_rank`` -- Roy & Vetterli (2007): ``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j``,
      the exponential of the entropy of the normalised singular values (1 to ``min(samples, features)``);
    * ``stable_rank`` -- ``||A||_F^2 / ||A||_2^2 = sum_i s_i^2 / s_1^2`` (Rudelson & Vershynin 2007);
    * ``pca_components_99`` -- the fewest principal components whose variance is at least 99 % of the
      total, and ``pca_fraction_99`` -- that number over ``min(samples, features)``.

    A constant layer -- all zeros, a dead layer, or every sample the same -- has no spread: its centred
    vectors are the zero matrix, of rank 0, and every number is 0 (by that convention; not NaN, so a dead
    layer reads as the lowest possible rank in the tables).  A layer with a non-finite value (a diverged
    run) gives null for every number.

    ``method``: ``"exact"`` -- every eigenvalue of the smaller Gram matrix (``x^T x`` or ``x x^T``), float64,
    on the run's device; ``"estimate"`` -- deflated stochastic Lanczos quadrature, seeded, with the
    error bound of :mod:`bnprobe.probes._spectrum` (its top eigenvalue, behind ``stable_rank``, is a
    converged Ritz value); ``"auto"`` (default) -- exact while ``min(samples, features) <= EXACT_MAX``
    (2,048), the estimate above, where the exact eigensolver takes many times an HDBSCAN probe on a
    CPU.  The choice depends on the sizes only, so every run of a study is measured the same way.
    """

    description: ClassVar[str] = "effective rank, stable rank and 99 % PCA count of the centred vectors"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "effective_rank"
    metrics: ClassVar[dict[str, Metric]] = {
        "effective_rank": Metric("Roy & Vetterli (2007) effective rank of the centred vectors: exp of the Shannon "
                                 "entropy of the normalised singular values p_i = s_i / sum_j s_j; 0 for a constant "
                                 "layer", "1 to min(samples, features) (0: constant layer)"),
        "stable_rank": Metric("stable rank ||A||_F^2 / ||A||_2^2 (sum of squared singular values over the largest "
                              "squared) of the centred vectors A (Rudelson & Vershynin 2007); 0 for a constant layer",
                              "1 to min(samples, features) (0: constant layer)"),
        "pca_components_99": Metric("fewest principal components of the centred vectors that explain at least 99 % "
                                    "of their variance; 0 for a constant layer", "0 to min(samples, features)"),
        "pca_fraction_99": Metric("pca_components_99 over min(samples, features)", "0 to 1"),
    }

    def __init__(self, *, method: str = "auto", **unknown: Any) -> None:
        super().__init__(**unknown)
        self.method = check_choice(f"probe {self.name}", "method", method, METHODS)

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """The spectrum of the layer's centred vectors on the run's device, and the numbers from it."""
        import torch

        vectors = layer.vectors_tensor(context.device)
        _checked_labels(layer, vectors.shape[0])
        if not bool(torch.isfinite(vectors).all()):
            return dict.fromkeys(self.metrics, math.nan)
        x = centred_float64(vectors)
        exact = self.method == "exact" or (self.method == "auto" and min(x.shape) <= EXACT_MAX)
        return rank_metrics(exact_spectrum(x) if exact else estimated_spectrum(x))
