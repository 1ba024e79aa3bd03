"""``cka``: how similar is a layer without BatchNorm to the same layer with it?

Linear centred kernel alignment (Kornblith et al., *Similarity of Neural Network Representations
Revisited*, ICML 2019) between the per-sample vectors ``X`` of a layer in the ``bn`` run and ``Y`` of
the same layer in this run's variant, same seed, same probed samples::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)        X, Y column-centred

It is 1 for representations that differ only by a rotation and an isotropic scaling, and 0 when the
two share no linear structure.  In the ``bn`` run the layer is compared with itself (1 by definition,
computed all the same, which checks the arithmetic).

The sums are taken in float64 on the run's device in blocks, so device memory never holds more than
one block of either input beside the products.  Which products depends on the shape:

* feature form, ``X^T X``, ``Y^T Y`` and ``Y^T X`` (``p*p + q*q + p*q`` values), when features are few;
* Gram form, the centred ``n x n`` Gram matrices ``K = X X^T`` and ``L = Y Y^T`` (``2*n*n`` values),
  when features outnumber samples: ``CKA = <K, L> / (||K||_F ||L||_F)``, the same number.

This is an ordinary installed package: its ``pyproject.toml`` names :class:`CKAProbe` in the
``bnprobe.probes`` entry-point group, and bnprobe finds it there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from bnprobe.errors import BnprobeError
from bnprobe.probes.base import REFERENCE_VARIANT, LayerData, Probe, ProbeContext
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch

__all__ = ["CKAProbe", "linear_cka"]

BLOCK_ELEMENTS = 1 << 24
"""Values of one input block moved to the device at a time (float64: 128 MiB)."""

Matrix: TypeAlias = "np.ndarray | torch.Tensor"
"""What the CKA functions take: host arrays (memory-mapped ones too) or tensors."""


def linear_cka(x: Matrix, y: Matrix, device: torch.device | str = "cpu") -> float:
    """Linear CKA of ``x`` ``(samples, p)`` and ``y`` ``(samples, q)``, rows being the same samples.

    NaN when either side is constant over the samples (nothing to align).  Arrays may be memory-mapped;
    they are read one block at a time.
    """
    import torch

    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise BnprobeError(f"cka needs two (samples, features) arrays over the same samples; "
                           f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    device = torch.device(device)
    if device.type == "mps":  # Apple GPUs have no float64
        device = torch.device("cpu")
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    products = _feature_products if p * p + q * q + p * q <= 2 * n * n else _gram_products
    xy, xx, yy = products(x, y, device)
    scale = math.sqrt(xx * yy)
    return xy / scale if scale > 0 else math.nan


def _feature_products(x: Matrix, y: Matrix, device: torch.device) -> tuple[float, float, float]:
    """``||Yc^T Xc||^2``, ``||Xc^T Xc||^2``, ``||Yc^T Yc||^2`` from one pass over row blocks.

    Centring is applied to the accumulated products (``Xc^T Xc = X^T X - n m m^T``), exact enough in
    float64 for activations.
    """
    import torch

    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    xtx = torch.zeros(p, p, dtype=torch.float64, device=device)
    yty = torch.zeros(q, q, dtype=torch.float64, device=device)
    ytx = torch.zeros(q, p, dtype=torch.float64, device=device)
    sx = torch.zeros(p, dtype=torch.float64, device=device)
    sy = torch.zeros(q, dtype=torch.float64, device=device)
    for rows in _spans(n, BLOCK_ELEMENTS // (p + q)):
        xb, yb = _on(x[rows], device), _on(y[rows], device)
        xtx.addmm_(xb.T, xb)
        yty.addmm_(yb.T, yb)
        ytx.addmm_(yb.T, xb)
        sx += xb.sum(dim=0)
        sy += yb.sum(dim=0)
    mx, my = sx / n, sy / n
    xtx -= n * torch.outer(mx, mx)
    yty -= n * torch.outer(my, my)
    ytx -= n * torch.outer(my, mx)
    return float(ytx.square().sum()), float(xtx.square().sum()), float(yty.square().sum())


def _gram_products(x: Matrix, y: Matrix, device: torch.device) -> tuple[float, float, float]:
    """``<K, L>``, ``||K||^2``, ``||L||^2`` of the centred Gram matrices."""
    k, l_ = _centred_gram(x, device), _centred_gram(y, device)
    return float((k * l_).sum()), float(k.square().sum()), float(l_.square().sum())


def _centred_gram(a: Matrix, device: torch.device) -> torch.Tensor:
    """``Ac Ac^T`` built from column blocks; centring a block's columns is exact, column by column."""
    import torch

    n = a.shape[0]
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    for cols in _spans(a.shape[1], BLOCK_ELEMENTS // n):
        block = _on(a[:, cols], device)
        block -= block.mean(dim=0)
        gram.addmm_(block, block.T)
    return gram


def _spans(total: int, step: int) -> Iterator[slice]:
    step = max(1, step)
    for start in range(0, total, step):
        yield slice(start, start + step)


def _on(block: Matrix, device: torch.device) -> torch.Tensor:
    """A block as float64 on ``device`` (a numpy block, memory-mapped or not, is read here)."""
    import torch

    if isinstance(block, np.ndarray):
        block = torch.from_numpy(np.ascontiguousarray(block))
    return block.to(device=device, dtype=torch.float64)


class CKAProbe(Probe):
    """Linear CKA of each layer with the same layer of the ``bn`` run of the same seed."""

    description = "linear CKA between this layer and the same layer of the BatchNorm (bn) run"
    needs = "vectors"
    scope = "layer"
    key_metric = "cka"
    metrics = {"cka": Metric("linear centred kernel alignment of this layer's vectors with the same layer's in the "
                             "bn run of the same seed (1 in the bn run itself); null when either is constant",
                             "0 (no shared linear structure) to 1 (same up to rotation and scale)")}
    compares_with_reference = True  # a study without the bn variant is refused before it trains

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """``{"cka": value}``; the ``bn`` run compares the layer with itself."""
        variant = context.stated_variant(self.key)
        reference = context.reference(layer.name)
        if reference is None:
            if variant != REFERENCE_VARIANT:
                raise BnprobeError(f"probe cka: no {REFERENCE_VARIANT} run to compare layer {layer.name} of "
                                   f"{variant} with; add the {REFERENCE_VARIANT} variant to the study, or pass "
                                   f"its capture: run_probes(..., reference=...) (and probe layers in both models)")
            reference = layer
        return {"cka": linear_cka(reference.vectors(), layer.vectors(), context.device)}
