"""Class selectivity (Morcos et al., ICLR 2018): how much more a channel responds to its best class.

A channel's activity on a sample is its spatial mean (a linear layer's feature as it is).  With
``mu_max`` the largest of its class-conditional mean activities and ``mu_rest`` the mean of the other
classes' means, its index is ``(mu_max - mu_rest) / (mu_max + mu_rest)``: 0 when every class drives it
alike, 1 when only one class does.

The index assumes non-negative activity (post-ReLU), where it lies in 0..1.  A channel with a negative
class mean -- a conv or norm output, an activation that goes negative such as SiLU or GELU -- has no
such reading (the denominator can vanish or change sign, sending the index anywhere), so it is left
out rather than shifted into range (any shift would be a choice the index does not make, and would
move with the scale BatchNorm changes); so is a dead channel, whose class means are all 0.
``selectivity_channels`` counts the channels that entered, and the note ``left_out`` says when a
layer had channels with negative class means.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.probes._clustering import _checked_labels, channel_activity
from bnprobe.probes._protocol import Need, Probe, ProbeContext
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

NEGATIVE_NOTE = "channels with a negative class mean (activity below 0: not post-ReLU) are left out"


def class_means(layer: LayerData) -> np.ndarray:
    """``(classes, channels)``: each channel's mean activity (spatial mean per sample) over each class's samples."""
    vectors = layer.vectors()
    labels = _checked_labels(layer, vectors.shape[0])
    activity = channel_activity(vectors, layer.shape, "mean", layer.name)
    return activity_class_means(activity, labels, f"probe selectivity: layer {layer.name}")


def activity_class_means(activity: np.ndarray, labels: np.ndarray, owner: str) -> np.ndarray:
    """``(classes, channels)``: the mean over each class's samples of the ``(samples, channels)`` activity.

    Shared with the ablation probe, which reads the activity off the model itself; ``owner`` begins the
    error raised when the samples hold fewer than two classes.
    """
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.size < 2:
        raise BnprobeError(f"{owner}: every probed sample has class {labels[0]}; "
                           "class selectivity compares two classes at least")
    sums = np.zeros((counts.size, activity.shape[1]))
    np.add.at(sums, codes, activity.astype(np.float64))
    return sums / counts[:, None]


def selectivity_index(means: np.ndarray) -> np.ndarray:
    """Morcos et al.'s index of each channel from its ``(classes, channels)`` class means; NaN for a
    channel left out (a negative class mean, or all of them 0)."""
    best = means.max(axis=0)
    rest = (means.sum(axis=0) - best) / (means.shape[0] - 1)
    enters = (means.min(axis=0) >= 0) & (best > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(enters, (best - rest) / (best + rest), math.nan)


@register_probe("selectivity")
class SelectivityProbe(Probe):
    """Morcos et al.'s class selectivity index per channel, summarised over the layer's channels."""

    description: ClassVar[str] = "class selectivity index of each channel (Morcos et al. 2018), over the channels"
    needs: ClassVar[Need] = "vectors"
    key_metric: ClassVar[str] = "class_selectivity"
    metrics: ClassVar[dict[str, Metric]] = {
        "class_selectivity": Metric("mean over channels of (mu_max - mu_rest) / (mu_max + mu_rest), mu_max the "
                                    "channel's largest class mean of its spatial-mean activity and mu_rest the mean "
                                    "of the other classes' means (Morcos et al. 2018); dead channels and channels "
                                    "with a negative class mean left out; null when none is left",
                                    "0 (every class alike) to 1 (one class only)"),
        "class_selectivity_std": Metric("standard deviation over the same channels of their selectivity index",
                                        "0 to 0.5"),
        "class_selectivity_q90": Metric("90th percentile over the same channels of their selectivity index",
                                        "0 to 1"),
        "selectivity_channels": Metric("channels that entered: not dead, no negative class mean", "0 to channels"),
    }

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """The index of every channel from its class means, summarised over the channels that entered."""
        index = selectivity_index(class_means(layer))
        entered = index[~np.isnan(index)]
        if not entered.size:
            return {"class_selectivity": math.nan, "class_selectivity_std": math.nan,
                    "class_selectivity_q90": math.nan, "selectivity_channels": 0.0}
        return {"class_selectivity": float(entered.mean()), "class_selectivity_std": float(entered.std()),
                "class_selectivity_q90": float(np.quantile(entered, 0.9)),
                "selectivity_channels": float(entered.size)}

    def notes(self, layer: LayerData | None, context: ProbeContext) -> dict[str, str]:
        """``left_out`` when some channel of the layer has a negative class mean (module docstring)."""
        return {"left_out": NEGATIVE_NOTE} if (class_means(layer) < 0).any() else {}
