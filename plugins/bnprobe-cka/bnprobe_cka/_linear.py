"""Linear CKA in float64, from blocks of the inputs: of two layers (:func:`linear_cka`) and of every
pair of two lists of layers (:func:`cka_matrix_values`).

Both estimators of Kornblith et al. (2019) are here.  The default, biased one divides the HSIC of the
centred Gram matrices ``K``, ``L``, ``tr(K L)``, by ``sqrt(tr(K K) tr(L L))``; its HSIC is biased upward
by ``O(1/n)``, so on independent inputs it reads well above 0 at small ``n`` (about 0.4 for 100 samples
of 64 independent Gaussian features each, 0.7 for 20 samples of 50).  ``debiased=True`` puts Song et
al.'s (2012) unbiased HSIC estimator in all three places (the google-research notebook's
``feature_space_linear_cka(debiased=True)``): with ``d_K`` the diagonal of ``K``,

    HSIC_u(K, L) = tr(K L) - n/(n-2) d_K . d_L + tr(K) tr(L) / ((n-1)(n-2))    (times 1/(n(n-3)): it cancels)

It is near 0 on independent inputs at any ``n``, may then be slightly negative, and needs 4 samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from bnprobe.errors import BnprobeError

if TYPE_CHECKING:
    import torch

__all__ = ["ESTIMATOR_DOC", "check_debiased", "cka_matrix_values", "linear_cka"]

BLOCK_ELEMENTS = 1 << 24
"""Values of one input block moved to the device at a time (float64: 128 MiB)."""

ESTIMATOR_DOC = ("the biased HSIC estimator by default, which reads well above 0 on independent inputs at small n "
                 "(about 0.4 for 100 samples of 64 features); with debiased=True the unbiased HSIC estimator of "
                 "Song et al. 2012, about 0 on independent inputs")
"""What the metric declarations of both probes say about the estimator."""

Matrix: TypeAlias = "np.ndarray | torch.Tensor"
"""What the CKA functions take: host arrays (memory-mapped ones too) or tensors."""


def linear_cka(x: Matrix, y: Matrix, device: torch.device | str = "cpu", debiased: bool = False) -> float:
    """Linear CKA of ``x`` ``(samples, p)`` and ``y`` ``(samples, q)``, rows being the same samples.

    ``debiased``: with the unbiased HSIC estimator (module docstring) rather than the biased one.
    NaN when either side is constant over the samples (nothing to align).  Arrays may be memory-mapped;
    they are read one block at a time.
    """

    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise BnprobeError(f"cka needs two (samples, features) arrays over the same samples; "
                           f"got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    check_debiased(debiased, n)
    device = _float64_device(device)
    products = _feature_products if p * p + q * q + p * q <= 2 * n * n else _gram_products
    xy, xx, yy = products(x, y, device)
    if debiased:
        dx, dy = _centred_row_norms(x, device), _centred_row_norms(y, device)
        xy, xx, yy = _unbiased(xy, dx, dy), _unbiased(xx, dx, dx), _unbiased(yy, dy, dy)
    return xy / math.sqrt(xx * yy) if xx > 0 and yy > 0 else math.nan


def cka_matrix_values(rows: Sequence[Matrix], columns: Sequence[Matrix] | None = None,
                      device: torch.device | str = "cpu", debiased: bool = False) -> np.ndarray:
    """Linear CKA of every ``rows[i]`` with every ``columns[j]``, as a ``(len(rows), len(columns))`` array.

    Each input is ``(samples, features)``, all over the same samples.  ``columns`` None compares
    ``rows`` with themselves (a symmetric matrix, each Gram matrix computed once).  Every entry is the
    number :func:`linear_cka` gives for that pair, from the centred Gram matrices
    (``CKA = <K, L> / (||K|| ||L||)``); NaN where either side is constant.  The columns'
    Gram matrices are held on ``device`` while the rows are read one at a time: ``len(columns) + 1``
    matrices of ``samples x samples`` float64 values.  ``debiased`` as in :func:`linear_cka`.
    """
    device = _float64_device(device)
    sides = [*rows, *(columns or ())]
    if any(a.ndim != 2 for a in sides) or len({a.shape[0] for a in sides}) > 1:
        raise BnprobeError("cka needs (samples, features) arrays over the same samples; got shapes "
                           f"{', '.join(str(tuple(a.shape)) for a in sides)}")
    check_debiased(debiased, sides[0].shape[0] if sides else 4)
    column_grams = [_squared_gram(a, device, debiased) for a in (rows if columns is None else columns)]
    values = np.full((len(rows), len(column_grams)), math.nan)
    for i, row in enumerate(rows):
        k, kk = column_grams[i] if columns is None else _squared_gram(row, device, debiased)
        for j, (l_, ll) in enumerate(column_grams):
            if kk > 0 and ll > 0:
                kl = kk if columns is None and i == j else _hsic(k, l_, debiased)  # self: exactly 1
                values[i, j] = kl / math.sqrt(kk * ll)
    return values


def check_debiased(debiased: Any, samples: int = 4) -> bool:
    """``debiased`` if it is a bool; refuses anything else, and the unbiased estimator on fewer than 4 samples."""
    if not isinstance(debiased, bool):
        raise BnprobeError(f"cka: debiased must be true or false, got {debiased!r}")
    if debiased and samples < 4:
        raise BnprobeError(f"cka: the debiased estimator needs at least 4 samples, got {samples}")
    return debiased


def _unbiased(product: float, dx: torch.Tensor, dy: torch.Tensor) -> float:
    """Song et al.'s unbiased HSIC (times ``n (n-3)``) from the biased ``tr(K L)`` of the centred Gram
    matrices and their diagonals ``dx``, ``dy`` (the centred rows' squared norms)."""
    n = dx.shape[0]
    return product - n / (n - 2) * float(dx @ dy) + float(dx.sum()) * float(dy.sum()) / ((n - 1) * (n - 2))


def _hsic(k: torch.Tensor, l_: torch.Tensor, debiased: bool) -> float:
    """``tr(K L)`` of two centred Gram matrices, or its unbiased counterpart."""
    product = float(k.flatten() @ l_.flatten())
    return _unbiased(product, k.diagonal(), l_.diagonal()) if debiased else product


def _squared_gram(a: Matrix, device: torch.device, debiased: bool = False) -> tuple[torch.Tensor, float]:
    """The centred Gram matrix of ``a`` and its (biased or unbiased) HSIC with itself (0 for a constant ``a``)."""
    gram = _centred_gram(a, device)
    return gram, _hsic(gram, gram, debiased)


def _float64_device(device: torch.device | str) -> torch.device:
    """``device``, or the CPU for Apple GPUs, which have no float64."""
    import torch

    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


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
    (k, kk), (l_, ll) = _squared_gram(x, device), _squared_gram(y, device)
    return float(k.flatten() @ l_.flatten()), kk, ll


def _centred_row_norms(a: Matrix, device: torch.device) -> torch.Tensor:
    """``||a_i - mean||^2`` of every row, the centred Gram matrix's diagonal: the mean from one pass over
    row blocks, the norms from a second."""
    import torch

    n = a.shape[0]
    step = BLOCK_ELEMENTS // a.shape[1]
    mean = sum((_on(a[rows], device).sum(dim=0) for rows in _spans(n, step)),
               torch.zeros(a.shape[1], dtype=torch.float64, device=device)) / n
    return torch.cat([(_on(a[rows], device) - mean).square().sum(dim=1) for rows in _spans(n, step)])


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


