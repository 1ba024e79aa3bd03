"""``procrustes``: the orthogonal-Procrustes shape distance of each layer to the same layer of the ``bn`` run.

netrep's angular shape metric (Williams, Kunz, Kornblith & Linderman, *Generalized Shape Metrics on
Neural Representations*, NeurIPS 2021; ``netrep.metrics.LinearMetric(alpha=1, center_columns=True,
zero_pad=True, score_method="angular")``) between the per-sample vectors ``X`` of the layer in the ``bn``
run and ``Y`` of the same layer in this run, same seed, same probed samples.  With ``X``, ``Y`` centred
(each feature minus its mean over the samples) and scaled to unit Frobenius norm::

    c = max over orthogonal Q of <X Q, Y> = ||X^T Y||_*      (the nuclear norm: the sum of singular values)
    procrustes           = arccos(c)                      in radians, 0 to pi/2
    procrustes_euclidean = min_Q ||X Q - Y||_F = sqrt(2 - 2c)   0 to sqrt(2)

Widths that differ are zero-padded to the wider one, netrep's ``zero_pad=True``; padding adds zero rows
to ``X^T Y`` and leaves its nuclear norm as it is, so nothing is padded in fact.  Both are 0 exactly when
``Y`` is a rotated (or reflected), scaled and translated copy of ``X``.  ``procrustes_euclidean`` is
``2 sin(procrustes / 2)``: the same ordering, in the units of Ding, Denain & Steinhardt (2021), whose
orthogonal Procrustes distance is its square; netrep's ``score_method="euclidean"`` is this without the
unit-norm scaling, so it carries the layers' scales, which BatchNorm changes by design.

``c`` is computed in float64 on the run's device:

* exactly (``method="exact"``): a side wider than the samples is first replaced by the ``n x n``
  triangular factor of its QR decomposition (``A = R^T Q^T``, the same Gram matrix ``A A^T`` and the
  same ``||A^T B||_*``), then the singular values of the ``min(n, p) x min(n, q)`` product;
* estimated (``method="estimate"``): ``||X^T Y||_* = tr((M^T M)^{1/2})`` for ``M = X^T Y``, by the rank
  probe's deflated stochastic Lanczos quadrature (:mod:`bnprobe.probes._spectrum`: the top ``TOP``
  eigenvalues of ``M^T M`` exactly, Hutchinson's estimator with Gauss quadrature on the rest), products
  with ``X`` and ``Y`` only, never ``M``; seeded, so the same on every run.  Its relative standard
  deviation on the deflated part is at most ``1 / sqrt(2 PROBES TOP)`` (2.2 %; that module's bound);
  ``bench/new_probes.py`` prints its measured error against the exact value.  Near 0 the arccos
  magnifies any error in ``c`` (``arccos(1 - e) ~ sqrt(2 e)``): an estimate cannot tell a small
  distance from 0, the exact method can.  Measured on the bench's CNN-like 1,500 x 1,024 vectors against
  a noisy copy: ``c`` 0.7 % high, the distance 0.326 for an exact 0.346 (6 % low); against independent
  vectors 1.3238 for 1.3249.
* ``"auto"``: exact while the smaller reduced width, ``min(samples, p, q)``, is at most ``EXACT_MAX``
  (2,048), estimated above (the full SVD of a 4,096-wide product takes minutes on two cores, a
  fraction of a second on a GPU).

The default is ``"exact"``: an error of a few per cent, larger than many of the differences a study
looks for, is not a default for a number that gets published; the estimate is a parameter away for a
first look at wide layers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.params import check_choice
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes._spectrum import SEED, centred_float64, lanczos, top_eigenpairs
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch

EXACT_MAX = 2048
"""``method="auto"`` is exact while ``min(samples, p, q)`` is at most this (as the rank probe's), estimated
above, where the SVD takes minutes on two CPU cores."""
METHODS = ("auto", "exact", "estimate")
PROBES = 32
"""Gaussian starts of the quadrature on the deflated part."""


def procrustes_distances(x: torch.Tensor, y: torch.Tensor | None, method: str = "exact") -> dict[str, float]:
    """``{"procrustes": angular, "procrustes_euclidean": euclidean}`` of ``x`` and ``y`` ``(samples, features)``.

    ``y`` None compares ``x`` with itself: ``c`` is 1 by definition, so both are exactly 0 (an SVD would
    give about 1e-8 for it, the arccos magnifying rounding).  NaN when either side is constant (nothing to
    align) or holds a non-finite value.  ``method`` ``"exact"`` or ``"estimate"`` (module docstring).
    """
    sides = [centred_float64(a) for a in (x, y if y is not None else x)]
    norms = [float(a.norm()) for a in sides]
    if not all(math.isfinite(norm) and norm > 0 for norm in norms):
        return dict.fromkeys(PROCRUSTES_METRICS, math.nan)
    if y is None:
        similarity = 1.0
    else:
        a, b = (side / norm for side, norm in zip(sides, norms, strict=True))
        nuclear = _exact_nuclear(a, b) if method == "exact" else _estimated_nuclear(a, b)
        similarity = min(max(nuclear, 0.0), 1.0)  # rounding, or the estimate, may leave [0, 1]
    return {"procrustes": math.acos(similarity), "procrustes_euclidean": math.sqrt(2.0 - 2.0 * similarity)}


def _reduced(a: torch.Tensor) -> torch.Tensor:
    """``a`` itself, or for an ``a`` wider than its samples the ``n x n`` ``R^T`` of ``a^T = Q R``: the same
    Gram matrix ``a a^T``, so the same nuclear norm of ``a^T b`` for every ``b``."""
    import torch

    return a if a.shape[1] <= a.shape[0] else torch.linalg.qr(a.T).R.T


def _exact_nuclear(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a^T b||_*`` from the singular values of the (reduced) product, in float64."""
    import torch

    return float(torch.linalg.svdvals(_reduced(a).T @ _reduced(b)).sum())


def _estimated_nuclear(a: torch.Tensor, b: torch.Tensor) -> float:
    """``tr((M^T M)^{1/2})`` for ``M = a^T b`` on its smaller side: the top eigenvalues exactly, the rest by
    Hutchinson's estimator with Lanczos quadrature; products in float32, recurrences in float64."""
    import torch

    if b.shape[1] > a.shape[1]:
        a, b = b, a  # the operator works on b's side, the smaller one: ||a^T b||_* = ||b^T a||_*
    a32, b32 = a.to(torch.float32), b.to(torch.float32)

    def gram(v: torch.Tensor) -> torch.Tensor:
        return (b32.T @ (a32 @ (a32.T @ (b32 @ v.to(torch.float32))))).to(torch.float64)

    generator = torch.Generator().manual_seed(SEED)
    top, basis = top_eigenpairs(b.shape[1], gram, generator, a.device)
    nuclear = float(top.sqrt().sum())
    if float(top[0]) <= 0:
        return nuclear

    def deflate(v: torch.Tensor) -> torch.Tensor:
        return v - basis @ (basis.T @ v)

    starts = deflate(torch.randn(b.shape[1], PROBES, generator=generator, dtype=torch.float64).to(a.device))
    nodes, first = lanczos(lambda v: deflate(gram(v)), starts, float(top[0]))
    share = starts.square().sum(dim=0)[:, None] * first  # ||z||^2 times the first components squared
    return nuclear + float((share * nodes.sqrt()).sum()) / PROBES


PROCRUSTES_METRICS: dict[str, Metric] = {
    "procrustes": Metric(
        "netrep's angular orthogonal-Procrustes shape distance (Williams et al. 2021, alpha=1) of this layer's "
        "vectors to the same layer's in the bn run of the same seed: arccos ||X^T Y||_* of the centred, unit "
        "Frobenius norm vectors, the narrower zero-padded (0 in the bn run itself); null when either is constant",
        "0 (a rotated, scaled, translated copy) to pi/2 radians"),
    "procrustes_euclidean": Metric(
        "min over orthogonal Q of ||X Q - Y||_F of the same centred unit-norm vectors, sqrt(2 - 2 ||X^T Y||_*) "
        "= 2 sin(procrustes / 2): the square root of Ding et al.'s (2021) orthogonal Procrustes distance",
        "0 to sqrt(2)"),
}


@register_probe("procrustes")
class ProcrustesProbe(Probe):
    """Orthogonal-Procrustes shape distance of each layer to the same layer of the ``bn`` run (module docstring).

    ``method``: ``"exact"`` (default), ``"estimate"`` or ``"auto"`` (exact while ``min(samples, p, q) <=
    EXACT_MAX``).
    """

    description: ClassVar[str] = "orthogonal-Procrustes shape distance to the same layer of the BatchNorm (bn) run"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "procrustes"
    metrics: ClassVar[dict[str, Metric]] = PROCRUSTES_METRICS
    compares_with_reference: ClassVar[bool] = True  # a study without the bn variant is refused before it trains

    def __init__(self, *, method: str = "exact", **unknown: Any) -> None:
        super().__init__(**unknown)
        self.method = check_choice(f"probe {self.name}", "method", method, METHODS)

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Both distances to the same layer of the ``bn`` run; the ``bn`` run's layer is at 0 from itself."""
        variant = context.stated_variant(self.key)
        reference = context.reference(layer.name)
        if reference is None and variant != REFERENCE_VARIANT:
            raise BnprobeError(f"probe {self.key}: no {REFERENCE_VARIANT} run to compare layer {layer.name} of "
                               f"{variant} with; add the {REFERENCE_VARIANT} variant to the study, or pass its "
                               "capture: run_probes(..., reference=...)")
        x = (reference or layer).vectors_tensor(context.device)
        y = None if reference is None else layer.vectors_tensor(context.device)
        if y is not None and y.shape[0] != x.shape[0]:
            raise BnprobeError(f"probe {self.key}: layer {layer.name} has {y.shape[0]} probed samples and the bn "
                               f"run's {x.shape[0]}; probe both on the same samples")
        smaller = min(x.shape[0], x.shape[1], x.shape[1] if y is None else y.shape[1])
        exact = self.method == "exact" or (self.method == "auto" and smaller <= EXACT_MAX)
        return procrustes_distances(x, y, "exact" if exact else "estimate")
