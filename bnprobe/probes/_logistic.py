"""The linear probe's classifier, fitted on one training fold and scored on its held-out fold, in torch.

It is scikit-learn's ``Pipeline([StandardScaler(), PCA(dims), LogisticRegression(C=1.0)])``:

1. standardise each feature by the training fold's mean and (population) standard deviation, a
   constant feature by 1, as ``StandardScaler`` does;
2. when there are more features than ``max_features``, project onto the training fold's top
   principal components of the standardised features (a seeded randomized SVD, Halko et al. 2011);
3. multinomial logistic regression with an L2 penalty of strength ``1 / C`` on the weights (not the
   intercepts): the minimiser of ``LogisticRegression(C=C)``'s objective, found by L-BFGS.

The pipeline itself took tens of seconds per layer of 5,000 x 4,096 on two CPU cores (its PCA and
lbfgs); in torch the same fit costs about a tenth of that, and runs on the run's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

C = 1.0
"""Inverse L2 penalty, as scikit-learn's ``LogisticRegression(C=1.0)`` default: on standardised features a
mild penalty that keeps the fit finite when the classes are separable, as they often are in a layer."""
MAX_ITERATIONS = 200
"""L-BFGS iterations at most (scikit-learn's lbfgs stops at 100); the fits here converge in 30-150."""
GRADIENT_TOLERANCE = 1e-6
"""L-BFGS stops when no gradient entry of the mean loss exceeds this."""
POWER_ITERATIONS = 1
"""Power iterations of the randomized PCA: one already keeps nearly all the variance the exact top
components keep, and each costs two more passes over the training fold."""
OVERSAMPLE = 10


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both folds scaled by the training fold's mean and population standard deviation (0 becomes 1)."""
    mean = train.mean(dim=0)
    std = train.std(dim=0, correction=0)
    std = std.masked_fill(std == 0, 1.0)
    return (train - mean) / std, (test - mean) / std


def pca_basis(centred: torch.Tensor, dims: int, seed: int) -> torch.Tensor:
    """The ``(features, dims)`` top principal axes of the centred ``(samples, features)`` training fold.

    A randomized SVD whose Gaussian test matrix is drawn on the CPU from ``seed``, so the axes are the
    same on every run and, up to rounding, on every device; exact when ``dims`` plus the oversampling
    reaches the smaller side of the data.
    """
    import torch

    rank = min(dims + OVERSAMPLE, *centred.shape)
    generator = torch.Generator().manual_seed(seed)
    sketch = centred @ torch.randn(centred.shape[1], rank, generator=generator).to(centred)
    for _ in range(POWER_ITERATIONS):
        sketch = centred @ (centred.T @ torch.linalg.qr(sketch).Q)
    basis = torch.linalg.qr(sketch).Q
    _, _, axes = torch.linalg.svd(basis.T @ centred, full_matrices=False)
    return axes[:dims].T


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(features, classes)`` and intercepts of L2-penalised multinomial logistic regression.

    Minimises the mean cross-entropy plus ``|W|^2 / (2 C n)``, which is scikit-learn's
    ``C * sum(loss) + |W|^2 / 2`` divided by ``C n``: the same minimiser.  In float64, where L-BFGS's
    line search converges cleanly.
    """
    import torch

    x = features.double()
    weights = torch.zeros(x.shape[1], classes, dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=MAX_ITERATIONS, tolerance_grad=GRADIENT_TOLERANCE,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")
    penalty = 1.0 / (2.0 * C * x.shape[0])

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, labels) + penalty * weights.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return weights.detach(), bias.detach()


def fold_accuracy(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                  classes: int, max_features: int, seed: int) -> tuple[float, int]:
    """Accuracy on the ``test`` rows of the pipeline (module docstring) fitted on the ``train`` rows of
    ``(samples, features)``, and the number of features the classifier read (the PCA's when it reduced).

    ``labels`` are class codes ``0 .. classes - 1``; ``train`` and ``test`` index rows.
    """
    fitted, held_out = standardise(features[train].float(), features[test].float())
    if fitted.shape[1] > max_features:
        axes = pca_basis(fitted, min(max_features, fitted.shape[0]), seed)
        fitted, held_out = fitted @ axes, held_out @ axes
    weights, bias = fit_logistic(fitted, labels[train], classes)
    predicted = (held_out.double() @ weights + bias).argmax(dim=1)
    return float((predicted == labels[test]).double().mean()), fitted.shape[1]
