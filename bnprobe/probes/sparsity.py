"""Sparsity of a layer's activations, streamed batch by batch.

An activation value counts as *zero* when ``|a| <= eps``.  ``eps=0`` (the default) counts exact
zeros, which is what a ReLU produces.  SiLU, GELU and other smooth activations are almost never
exactly zero, so for them pass a small ``eps`` (e.g. ``1e-2``) and read the numbers as "near-zero"
sparsity.

Metrics (``C`` channels, ``N`` probed samples, ``P`` spatial positions per channel):

* ``channel_sparsity`` -- mean over channels of the fraction of zeros in that channel, over all
  samples and positions (the paper's per-channel sparsity, averaged);
* ``channel_sparsity_q10`` / ``_q50`` / ``_q90`` -- quantiles of that per-channel distribution;
* ``sample_sparsity`` -- mean over samples of the fraction of zeros in the sample's whole
  representation;
* ``dead_channel_fraction`` -- share of channels that are zero for every probed sample and position;
* ``hoyer`` -- mean over samples of Hoyer's sparsity ``(sqrt(n) - L1/L2) / (sqrt(n) - 1)`` of the
  sample's representation (1 = a single non-zero, 0 = all equal; an all-zero sample counts as 1);
* ``class_sparsity_<label>`` -- fraction of zeros over the samples of each class, and
  ``class_sparsity_spread``, the largest minus the smallest of those.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bnprobe.params import check_float
from bnprobe.probes.base import StreamingProbe, register_probe
from bnprobe.probes.metrics import Metric


class SparsityAccumulator:
    """Running zero counts for one layer; memory is O(channels + samples + classes)."""

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.channel_zeros: torch.Tensor | None = None
        self.channel_total = 0
        self.sample_fractions: list[torch.Tensor] = []
        self.hoyer: list[torch.Tensor] = []
        self.class_zeros: dict[int, float] = {}
        self.class_total: dict[int, int] = {}

    def update(self, activations: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold in a batch ``(batch, channels, *spatial)``.

        Every count is a reduction over the tensor's own dimensions, so a batch in any memory layout
        (channels-last included) is read as it is, never copied into another.
        """
        acts = activations.detach().float()
        if acts.dim() == 1:
            acts = acts[:, None]
        per_sample_dims = tuple(range(1, acts.dim()))
        zero = acts == 0 if self.eps == 0 else acts.abs() <= self.eps  # the same test; eps 0 needs no abs
        per_channel = zero.sum(dim=(0, *per_sample_dims[1:]), dtype=torch.float64)
        self.channel_zeros = per_channel if self.channel_zeros is None else self.channel_zeros + per_channel
        self.channel_total += zero[:, 0].numel()
        zeros_per_sample = zero.sum(dim=per_sample_dims, dtype=torch.float64)
        width = zero[0].numel()
        self.sample_fractions.append((zeros_per_sample / width).cpu())
        self.hoyer.append(_hoyer(acts, per_sample_dims, width).cpu())
        zeros_per_sample = zeros_per_sample.cpu()
        labels = labels.cpu()
        for label in labels.unique().tolist():
            mask = labels == label
            self.class_zeros[label] = self.class_zeros.get(label, 0.0) + float(zeros_per_sample[mask].sum())
            self.class_total[label] = self.class_total.get(label, 0) + int(mask.sum()) * width

    def result(self) -> dict[str, float]:
        """The sparsity metrics of everything seen so far."""
        if self.channel_zeros is None:
            raise ValueError("sparsity: no activations were seen for this layer")
        channel = (self.channel_zeros / self.channel_total).cpu().numpy()
        out = {
            "channel_sparsity": float(channel.mean()),
            "channel_sparsity_q10": float(np.quantile(channel, 0.10)),
            "channel_sparsity_q50": float(np.quantile(channel, 0.50)),
            "channel_sparsity_q90": float(np.quantile(channel, 0.90)),
            "sample_sparsity": float(torch.cat(self.sample_fractions).double().mean()),
            "dead_channel_fraction": float((channel == 1.0).mean()),
            "hoyer": float(torch.cat(self.hoyer).double().mean()),
        }
        per_class = {label: self.class_zeros[label] / self.class_total[label] for label in sorted(self.class_zeros)}
        for label, value in per_class.items():
            out[f"class_sparsity_{label}"] = float(value)
        out["class_sparsity_spread"] = float(max(per_class.values()) - min(per_class.values()))
        return out


def _hoyer(acts: torch.Tensor, dims: tuple[int, ...], n: int) -> torch.Tensor:
    """Hoyer sparsity of each sample's ``n`` values (over ``dims``), in float64; an all-zero sample is
    maximally sparse (1.0)."""
    l1 = acts.abs().sum(dim=dims, dtype=torch.float64)
    if n < 2:
        return (l1 == 0).float()
    l2 = torch.linalg.vector_norm(acts, 2, dim=dims, dtype=torch.float64)
    root = math.sqrt(n)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(1e-300), torch.full_like(l1, 1.0))
    return ((root - ratio) / (root - 1)).float()


@register_probe("sparsity")
class SparsityProbe(StreamingProbe):
    """Channel, sample, class and Hoyer sparsity of a layer, streamed during capture."""

    description = "fraction of (near-)zero activations per channel, sample and class; Hoyer sparsity"
    key_metric = "channel_sparsity"
    metrics = {
        "channel_sparsity": Metric("mean over channels of the fraction of zeros (|a| <= eps) in the channel, over "
                                   "every probed sample and position", "0 to 1"),
        "channel_sparsity_q10": Metric("10th percentile over channels of that per-channel fraction of zeros",
                                       "0 to 1"),
        "channel_sparsity_q50": Metric("median over channels of the per-channel fraction of zeros", "0 to 1"),
        "channel_sparsity_q90": Metric("90th percentile over channels of the per-channel fraction of zeros",
                                       "0 to 1"),
        "sample_sparsity": Metric("mean over samples of the fraction of zeros in the sample's whole representation",
                                  "0 to 1"),
        "dead_channel_fraction": Metric("share of channels that are zero for every probed sample and position",
                                        "0 to 1"),
        "hoyer": Metric("mean over samples of Hoyer's sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1) of the sample's "
                        "representation; an all-zero sample counts as 1", "0 (all equal) to 1 (one non-zero)"),
        "class_sparsity_<label>": Metric("fraction of zeros over the samples of class <label> (one metric per "
                                         "class label)", "0 to 1"),
        "class_sparsity_spread": Metric("largest minus smallest class_sparsity_<label>: how much sparsity depends "
                                        "on the class", "0 to 1"),
    }

    def __init__(self, eps: float = 0.0) -> None:
        self.eps = check_float("sparsity", "eps", eps, minimum=0.0)

    def accumulator(self, layer: str, shape: tuple[int, ...]) -> SparsityAccumulator:
        """A fresh zero counter for ``layer``."""
        return SparsityAccumulator(self.eps)
