"""Linear probes: how much of the class a linear read-out takes from a layer (Alain & Bengio 2017), and
how much from its k best channels alone (k-sparse probing, Gurnee et al. 2023).

Each number is a cross-validated held-out accuracy on the probed samples: stratified folds shuffled
with ``seed``, the classifier of :mod:`bnprobe.probes._logistic` fitted on each training fold (its
standardisation and PCA included) and scored on the held-out fold, averaged over the folds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.params import check_int
from bnprobe.probes._clustering import _checked_labels, channel_activity
from bnprobe.probes._logistic import fold_accuracy
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

DEFAULT_KS = (1, 4, 16)
DEFAULT_MAX_FEATURES = 256
"""Features the dense classifier reads at most: more are reduced by PCA inside each fold.  256 keeps
the fit of 5,000 x 4,096 within the ``hdbscan`` probe's time on two cores (``bench/linear_selectivity.py``)
and is far above the number of classes, which bounds what a linear read-out needs."""

_CHANCE = "chance: chance_accuracy, the majority class's share (1/classes when balanced)"


def top_channels(activity: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` columns of ``(samples, channels)`` activity with the largest ANOVA F statistic
    (scikit-learn's ``f_classif``) against ``labels``; a constant channel (F undefined) ranks last."""
    from sklearn.feature_selection import f_classif

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # f_classif warns about constant channels, which rank last here
        scores = f_classif(activity, labels)[0]
    return np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:k]


@register_probe("linear")
class LinearProbe(Probe):
    """Cross-validated linear-probe accuracy of a layer, of its k best channels, and the chance level.

    Parameters
    ----------
    folds:
        Stratified cross-validation folds (default 5), shuffled with ``seed``; every class needs at
        least ``folds`` probed samples.
    seed:
        Seed of the fold shuffle and of the PCA's random test matrix (default 0).
    max_features:
        A layer with more features is reduced inside each fold to this many principal components of
        the standardised training fold (default 256); ``features_used`` says what was read.
    ks:
        Channel counts of the k-sparse probes (default ``(1, 4, 16)``): per fold the channels are
        ranked by their ANOVA F statistic on the training fold -- a conv layer's channel by its
        spatial mean per sample, a linear layer's features as they are -- and the top ``k`` go into
        the same classifier.  ``sparse_accuracy_<k>`` is null when the layer has fewer than ``k``.
    """

    description: ClassVar[str] = "cross-validated linear-probe accuracy of the layer and of its k best channels"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "accuracy"
    metrics: ClassVar[dict[str, Metric]] = {
        "accuracy": Metric("held-out accuracy of multinomial logistic regression (L2, C=1, L-BFGS) on the layer's "
                           "standardised vectors, PCA-reduced to max_features inside each fold when larger; mean "
                           "over stratified folds (Alain & Bengio 2017)", f"0 to 1 ({_CHANCE})",
                           "higher is better"),
        "chance_accuracy": Metric("held-out accuracy of always predicting the training fold's most common class, "
                                  "mean over the same folds", "0 to 1"),
        "sparse_accuracy_<k>": Metric("held-out accuracy of the same classifier on the k channels with the largest "
                                      "ANOVA F statistic on the training fold (channel = a conv channel's spatial "
                                      "mean, or a linear layer's feature), mean over the folds; k-sparse probing, "
                                      "Gurnee et al. 2023; null when the layer has fewer than k channels",
                                      f"0 to 1 ({_CHANCE})", "higher is better"),
        "features_used": Metric("features the dense classifier read: the layer's own, or max_features principal "
                                "components when the layer has more", "1 to max_features"),
    }

    def __init__(self, *, folds: int = 5, seed: int = 0, max_features: int = DEFAULT_MAX_FEATURES,
                 ks: Sequence[int] = DEFAULT_KS, **unknown: Any) -> None:
        super().__init__(**unknown)
        owner = f"probe {self.name}"
        self.folds = check_int(owner, "folds", folds, minimum=2)
        self.seed = check_int(owner, "seed", seed, minimum=0)
        self.max_features = check_int(owner, "max_features", max_features, minimum=1)
        if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence):
            raise BnprobeError(f"{owner}: ks must be a list of channel counts, e.g. [1, 4, 16], got {ks!r}")
        self.ks = tuple(sorted({check_int(owner, "ks", k, minimum=1) for k in ks}))

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Cross-validate the dense, sparse and majority-class classifiers over the same folds."""
        import torch
        from sklearn.model_selection import StratifiedKFold

        vectors = layer.vectors_tensor(context.device)
        labels = _checked_labels(layer, vectors.shape[0])
        classes, codes = np.unique(labels, return_inverse=True)
        self._check(layer, classes, codes, bool(torch.isfinite(vectors).all()))
        activity = channel_activity(layer.vectors(), layer.shape, "mean", layer.name)
        channels = torch.from_numpy(np.ascontiguousarray(activity, dtype=np.float32)).to(context.device)
        targets = torch.from_numpy(codes).to(context.device)
        ks = [k for k in self.ks if k <= activity.shape[1]]
        scores: dict[str, list[float]] = {"accuracy": [], "chance_accuracy": [],
                                          **{f"sparse_accuracy_{k}": [] for k in ks}}
        split = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed).split(codes, codes)
        for train_index, test_index in split:
            train, test = (torch.from_numpy(i).to(context.device) for i in (train_index, test_index))
            accuracy, features_used = fold_accuracy(vectors, targets, train, test, classes.size,
                                                    self.max_features, self.seed)
            scores["accuracy"].append(accuracy)
            majority = np.bincount(codes[train_index]).argmax()
            scores["chance_accuracy"].append(float((codes[test_index] == majority).mean()))
            for k in ks:
                top = torch.from_numpy(top_channels(activity[train_index], codes[train_index], k))
                scores[f"sparse_accuracy_{k}"].append(fold_accuracy(
                    channels[:, top.to(context.device)], targets, train, test, classes.size, self.max_features,
                    self.seed)[0])
        out = {name: float(np.mean(values)) for name, values in scores.items()}
        out.update({f"sparse_accuracy_{k}": math.nan for k in self.ks if k not in ks})
        out["features_used"] = float(features_used)
        return out

    def _check(self, layer: LayerData, classes: np.ndarray, codes: np.ndarray, finite: bool) -> None:
        """Refuse what cross-validation cannot read: one class, a class with fewer samples than folds,
        non-finite vectors."""
        counts = np.bincount(codes)
        owner = f"probe {self.key}: layer {layer.name}"
        if classes.size < 2:
            raise BnprobeError(f"{owner}: every probed sample has class {classes[0]}; a classifier needs two classes")
        if counts.min() < self.folds:
            raise BnprobeError(f"{owner}: class {classes[counts.argmin()]} has {counts.min()} probed samples, "
                               f"fewer than folds={self.folds}; probe more samples or lower folds")
        if not finite:
            raise BnprobeError(f"{owner}: the vectors hold non-finite values (a diverged run?); "
                               "a classifier needs finite ones")
