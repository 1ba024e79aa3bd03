"""The eigenvalues of a layer's centred Gram matrix -- its squared singular values -- exactly or estimated.

The ``rank`` probe reads a layer's whole spectrum: its effective rank and its 99 % PCA count are set by
the bulk of small singular values as much as by the top ones (on CNN-like 5,000 x 4,096 vectors the
count is about 2,400), so no truncated SVD can give them.  Two ways to that spectrum, both in torch,
in float64, on the run's device:

* :func:`exact_spectrum` -- the eigenvalues of the smaller Gram matrix (``x^T x`` or ``x x^T``,
  whichever is smaller), exact up to rounding.  Its symmetric eigensolver costs ``O(m^3)`` for
  ``m = min(samples, features)`` and is memory-bound on a CPU: for ``m = 4,096`` it takes several
  times an HDBSCAN probe on two cores (fractions of a second on a GPU).
* :func:`estimated_spectrum` -- *deflated stochastic Lanczos quadrature*: the top ``TOP`` eigenvalues
  by randomised subspace iteration (Halko, Martinsson & Tropp 2011), and the rest of the spectrum as a
  weighted set of Gauss nodes from ``PROBES`` Lanczos runs of ``STEPS`` steps on the deflated Gram
  matrix from Gaussian starts (Ubaru, Chen & Saad 2017), deflation as in Hutch++ (Meyer, Musco, Musco
  & Woodruff 2021).  Cost: ``O(samples x features x (TOP x (POWER + 2) + PROBES x STEPS))``.

Error of the estimate: every spectral sum ``sum_i f(lambda_i)`` it gives (for ``f = sqrt``, the
nuclear norm behind the effective rank) is Hutchinson's estimator on the deflated part plus the exact
sum over the top part, with a Gauss quadrature of ``STEPS`` nodes per start (exact for polynomials of
degree up to ``2 STEPS - 1``).  For a positive ``f``, Hutchinson's estimator of ``tr f(A)`` with ``N``
Gaussian starts after deflating the top ``r`` eigenvalues has a relative standard deviation of at
most ``1 / sqrt(2 N r)`` when the deflation is exact: 2.2 % at the defaults (Hutchinson's variance
``2 ||f(A) - f(A)_r||_F^2 / N``, and ``||B - B_r||_F <= tr(B) / (2 sqrt(r))`` for a positive
semi-definite ``B``, the lemma behind Hutch++ in Meyer et al. 2021).  That is a bound; on
CNN-like vectors the measured error is far smaller (``bench/new_probes.py`` prints it: about 0.2 % on
the effective rank, 0.5 % on the 99 % count).  The trace is always exact (``||x||_F^2``), and the
nodes' weights are scaled so that the estimated spectrum carries exactly the deflated part's variance.
The starts come from a fixed seed on the CPU, so the estimate is the same on every run and, up to
rounding, on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

TOP = 64
"""Eigenvalues found one by one (deflated) before the quadrature takes the rest."""
POWER = 2
"""Subspace iterations for the top eigenvalues."""
PROBES = 32
"""Gaussian starts of the quadrature."""
STEPS = 20
"""Lanczos steps (Gauss nodes) per start."""
SEED = 0

_NEGLIGIBLE = 1e-6
"""Ten float32 roundings or so, the products' accuracy: a Lanczos step whose new direction is below this
fraction of the largest eigenvalue ends that start (its Krylov space is invariant: the deflated matrix
has low rank, and its nodes are already exact); variance below this fraction of the total left after
the top eigenvalues is rounding, no spectrum to estimate."""


@dataclass(frozen=True)
class Spectrum:
    """A layer's spectrum as weighted eigenvalues: ``weights[i]`` of them (1 when exact) of size ``values[i]``."""

    values: np.ndarray
    """Eigenvalues of the centred Gram matrix (squared singular values of the centred vectors), >= 0."""
    weights: np.ndarray
    total: float
    """The exact trace, ``||x - mean||_F^2``: the layer's total variance times the samples."""
    size: int
    """``min(samples, features)``."""
    exact: bool


def centred_float64(vectors: torch.Tensor) -> torch.Tensor:
    """``vectors`` in float64 minus their mean sample (on the same device)."""
    import torch

    x = vectors.to(torch.float64)
    return x - x.mean(dim=0)


def gram_operator(x: torch.Tensor) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """The smaller Gram matrix of ``x`` as a product with a float64 block of columns, and its side.

    ``x^T x`` when there are no more features than samples, else ``x x^T``: both have the same
    non-zero eigenvalues, the squared singular values of ``x``.  It is never formed; the products
    with ``x`` run in ``x``'s own dtype and return float64.
    """
    import torch

    if x.shape[1] <= x.shape[0]:
        return x.shape[1], lambda v: (x.T @ (x @ v.to(x.dtype))).to(torch.float64)
    return x.shape[0], lambda v: (x @ (x.T @ v.to(x.dtype))).to(torch.float64)


def exact_spectrum(x: torch.Tensor) -> Spectrum:
    """Every eigenvalue of the smaller Gram matrix of the centred ``x``, from its symmetric eigensolver."""
    import torch

    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
    values = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).cpu().numpy()
    return Spectrum(values, np.ones_like(values), float(x.square().sum()), min(x.shape), True)


def estimated_spectrum(x: torch.Tensor) -> Spectrum:
    """The spectrum of the centred float64 ``x`` by deflated stochastic Lanczos quadrature (module docstring).

    The products with ``x`` -- the bulk of the work, bound by memory bandwidth -- run in float32, the
    vectors' captured precision, at twice float64's speed; the recurrences, orthogonalisation and
    eigenproblems run in float64.
    """
    import torch

    total = float(x.square().sum())
    side, gram = gram_operator(x.to(torch.float32))
    generator = torch.Generator().manual_seed(SEED)
    top, basis = top_eigenpairs(side, gram, generator, x.device)
    values, weights = top, torch.ones_like(top)
    rest = total - float(top.sum())
    if rest > _NEGLIGIBLE * total:  # else the top eigenvalues hold the whole spectrum

        def deflate(v: torch.Tensor) -> torch.Tensor:
            return v - basis @ (basis.T @ v)

        starts = deflate(torch.randn(side, PROBES, generator=generator, dtype=torch.float64).to(x.device))
        # The Lanczos vectors stay orthogonal to the top ones, so deflating each product keeps the run on
        # the deflated matrix.
        nodes, first = lanczos(lambda v: deflate(gram(v)), starts, float(top[0]))
        share = starts.square().sum(dim=0)[:, None] * first  # Hutchinson's weights, up to one factor
        mass = float((share * nodes).sum())
        if mass > 0:
            values = torch.cat([top, nodes.flatten()])
            weights = torch.cat([weights, (share * (rest / mass)).flatten()])
    return Spectrum(values.cpu().numpy(), weights.cpu().numpy(), total, min(x.shape), False)


def top_eigenpairs(side: int, operator: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``TOP`` largest eigenvalues (clamped at 0, descending) of the symmetric positive semi-definite
    ``operator`` on ``side`` dimensions and their eigenvectors, by ``POWER`` randomised subspace iterations
    (Halko, Martinsson & Tropp 2011) from Gaussian starts drawn from ``generator`` on the CPU."""
    import torch

    basis = torch.randn(side, TOP, generator=generator, dtype=torch.float64).to(device)
    for _ in range(POWER):
        basis = torch.linalg.qr(operator(basis)).Q
    top, rotation = torch.linalg.eigh(basis.T @ operator(basis))
    return top.clamp_min(0).flip(0), (basis @ rotation).flip(1)


def lanczos(operator: Callable[[torch.Tensor], torch.Tensor], starts: torch.Tensor,
             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss nodes and their weights' share (squared first components) of Lanczos on each column of ``starts``.

    All columns run at once, each with full reorthogonalisation against its own basis.  Returns two
    ``(columns, STEPS)`` tensors: the eigenvalues of each column's tridiagonal matrix, clamped at 0,
    and the squares of the first components of their eigenvectors.
    """
    import torch

    side, columns = starts.shape
    steps = min(STEPS, side)
    q = starts / starts.norm(dim=0).clamp_min(1e-300)
    basis = torch.zeros(columns, steps, side, dtype=torch.float64, device=starts.device)
    """Each start's Lanczos vectors as rows: ``basis[c, :j]`` is a contiguous ``(j, side)`` block."""
    alpha = torch.zeros(columns, steps, dtype=torch.float64, device=starts.device)
    beta = torch.zeros(columns, steps, dtype=torch.float64, device=starts.device)
    for j in range(steps):
        basis[:, j] = q.T
        w = operator(q)
        alpha[:, j] = (q * w).sum(dim=0)
        for _ in range(2):  # Kahan's "twice is enough"; one product per start (batched ones are slower)
            w = w - torch.stack([own.T @ (own @ row) for own, row in zip(basis[:, :j + 1], w.T, strict=True)], 1)
        norm = w.norm(dim=0)
        live = norm > _NEGLIGIBLE * scale
        beta[:, j] = norm * live
        q = w * (live / norm.clamp_min(1e-300))
    tridiagonal = torch.diag_embed(alpha) + torch.diag_embed(beta[:, :-1], 1) + torch.diag_embed(beta[:, :-1], -1)
    nodes, vectors = torch.linalg.eigh(tridiagonal)
    return nodes.clamp_min(0), vectors[:, 0, :].square()
