"""How far a layer's classes have collapsed onto their means: neural collapse NC1 and the CDNV.

Both compare the spread of the samples around their own class's mean with the spread of the class
means, on the layer's whole per-sample vectors, in torch, in float64, on the run's device.  With
``N`` samples in ``C`` classes, ``mu_c`` the mean of class ``c`` and ``mu_G`` the mean of all samples:

* ``nc1`` -- Papyan, Han & Donoho (2020), NC1: ``tr(Sigma_W Sigma_B^+) / C``, with
  ``Sigma_W = (1/N) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T`` (pooled over the samples, as Papyan et
  al. average the per-sample outer products), ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T``
  (each class once) and ``^+`` the Moore-Penrose pseudo-inverse;
* ``cdnv`` -- the class-distance normalised variance of Galanti, György & Hutter (2022), averaged over
  the pairs of classes: ``mean_{c < c'} (V_c + V_c') / (2 ||mu_c - mu_c'||^2)``, with
  ``V_c = mean_{i in c} ||x_i - mu_c||^2`` the class's total variance.

Lower, for both: the classes are more collapsed (tighter around means that lie further apart).

``nc1`` without a ``features x features`` matrix: ``Sigma_B = M^T M / C`` for the ``(C, features)``
matrix ``M`` of centred class means, of rank ``r <= C - 1``.  With ``M M^T = V diag(e) V^T``
(``C x C``) and its ``r`` non-zero eigenvalues, ``u_k = M^T v_k / sqrt(e_k)`` are orthonormal and
``Sigma_B^+ = C sum_k u_k u_k^T / e_k``, so

    tr(Sigma_W Sigma_B^+) / C = sum_k u_k^T Sigma_W u_k / e_k = sum_k ||W M^T v_k||^2 / (N e_k^2),

``W`` the ``(N, features)`` within-class deviations: exact, in ``O(N x features x C)``.  An eigenvalue
``e_k`` at most ``max(C, features) x eps x max(e)`` counts as 0, as ``numpy.linalg.pinv`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.probes._clustering import _checked_labels
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ClassSplit:
    """A layer's vectors split into class means and the deviations from them, float64 on one device."""

    means: torch.Tensor
    """``(C, features)``: each class's mean minus the mean of all samples."""
    within: torch.Tensor
    """``(N, features)``: each sample minus its class's mean, the samples ordered by class."""
    counts: torch.Tensor
    """``(C,)``: samples per class, in the order of ``means``."""


def class_split(vectors: torch.Tensor, labels: np.ndarray) -> ClassSplit:
    """Class means (around the global mean) and within-class deviations of ``(N, features)`` ``vectors``.

    The samples are sorted by class once, so each class's deviations are taken in place on a slice:
    memory is one float64 copy of the vectors.
    """
    import torch

    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = torch.as_tensor(np.argsort(codes, kind="stable"), device=vectors.device)
    x = vectors[order].to(torch.float64)
    x -= x.mean(dim=0)
    means = torch.empty(counts.size, x.shape[1], dtype=torch.float64, device=x.device)
    start = 0
    for c, count in enumerate(counts.tolist()):
        block = x[start:start + count]
        means[c] = block.mean(dim=0)
        block -= means[c]
        start += count
    return ClassSplit(means, x, torch.as_tensor(counts, dtype=torch.float64, device=x.device))


def nc1(split: ClassSplit) -> float:
    """Papyan et al.'s NC1, ``tr(Sigma_W Sigma_B^+) / C``, in the span of the class means (module docstring);
    NaN when the class means coincide (``Sigma_B = 0``)."""
    import torch

    eigenvalues, eigenvectors = torch.linalg.eigh(split.means @ split.means.T)
    largest = float(eigenvalues.max())
    kept = eigenvalues > max(split.means.shape) * torch.finfo(torch.float64).eps * largest
    if largest <= 0 or not bool(kept.any()):
        return math.nan
    projected = split.within @ (split.means.T @ eigenvectors[:, kept])
    return float((projected.square().sum(dim=0) / eigenvalues[kept].square()).sum() / split.within.shape[0])


def cdnv(split: ClassSplit) -> float:
    """Galanti et al.'s class-distance normalised variance, averaged over the pairs of classes; NaN when two
    classes share a mean."""
    import torch

    sizes = split.counts.long().tolist()
    variance = torch.stack([block.square().sum() for block in torch.split(split.within, sizes)]) / split.counts
    distance = torch.cdist(split.means, split.means).square()
    first, second = torch.triu_indices(len(sizes), len(sizes), offset=1, device=distance.device)
    pairs = distance[first, second]
    if not bool((pairs > 0).all()):
        return math.nan
    return float(((variance[first] + variance[second]) / (2 * pairs)).mean())


@register_probe("separability")
class SeparabilityProbe(Probe):
    """Neural collapse NC1 (Papyan et al. 2020) and the CDNV (Galanti et al. 2022) of a layer's classes.

    Both are ratios of the within-class spread to the spread of the class means, on the layer's whole
    per-sample vectors (module docstring for the exact formulas): lower, the classes are more collapsed.
    A layer with one class probed is an error (there is no between-class spread); a constant layer, or
    one whose class means coincide, gives null for both (0 / 0), and a layer with a non-finite value
    (a diverged run) too.
    """

    description: ClassVar[str] = "neural collapse NC1 and class-distance normalised variance of the classes"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "nc1"
    metrics: ClassVar[dict[str, Metric]] = {
        "nc1": Metric("Papyan, Han & Donoho (2020) neural collapse NC1, tr(Sigma_W Sigma_B^+) / C: Sigma_W the "
                      "within-class covariance pooled over the samples, Sigma_B the covariance of the C class means "
                      "around the mean of all samples (each class once), ^+ the pseudo-inverse; lower: classes more "
                      "collapsed; null when the class means coincide", "0 or more"),
        "cdnv": Metric("Galanti, György & Hutter (2022) class-distance normalised variance averaged over the pairs "
                       "of classes: mean over c < c' of (V_c + V_c') / (2 ||mu_c - mu_c'||^2), V_c the mean squared "
                       "distance of class c's samples to their mean mu_c; lower: classes more collapsed; null when "
                       "two classes share a mean", "0 or more"),
    }

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Split the layer's vectors by class on the run's device and compute both ratios."""
        import torch

        vectors = layer.vectors_tensor(context.device)
        labels = _checked_labels(layer, vectors.shape[0])
        if np.unique(labels).size < 2:
            raise BnprobeError(f"probe {self.key}: layer {layer.name}: every probed sample is of one class; "
                               "separability compares two classes at least")
        if not bool(torch.isfinite(vectors).all()):
            return dict.fromkeys(self.metrics, math.nan)
        split = class_split(vectors, labels)
        return {"nc1": nc1(split), "cdnv": cdnv(split)}
