"""Sparsity of a layer's activations, streamed batch by batch.

A value counts as *zero* -- the unit is off -- by a test chosen per layer from the activation the
layer is the output of (:attr:`bnprobe.probes.LayerData.activation`; :func:`zero_test_for`):

* ReLU and ReLU6 -- exact zeros, ``a == 0``: what they give for every input <= 0;
* activations that are negative for negative inputs -- SiLU, GELU, Mish, Hardswish, HardMish,
  LeakyReLU, PReLU, RReLU, ELU, CELU, SELU, Hardtanh, Tanh -- ``a <= 0``, the unit in its
  non-positive region.  That is the same event as ReLU's zero, the input being <= 0
  (``silu(x) <= 0`` exactly when ``x <= 0``, as ``relu(x) == 0``), so the numbers mean the same for
  every activation and compare across them.  Exact zeros would count next to nothing (SiLU is 0 at
  ``x = 0`` only), and a threshold relative to the layer's scale would move with that scale, which
  is what BatchNorm changes and a study compares.  (PReLU is read with a positive slope.)
* Sigmoid and Hardsigmoid, which are positive, by the same event: ``a <= 0.5``, their value at 0;
* any other layer -- a conv or a norm output, a residual sum, Softplus (never <= 0; its value at 0
  depends on ``beta``) -- exact zeros, the one test that needs no activation.

``eps`` widens the test: ``|a| <= eps`` where zeros are exact, ``a <= eps`` (``a <= 0.5 + eps``) in
the off region, so ``eps=0.01`` also counts the units that are barely on.  ``zero_test="exact"``
takes ``|a| <= eps`` at every layer (bnprobe's test before it chose one per layer).  Each layer's
test is filed with its numbers (the note ``zero_test``: ``a == 0 (relu)``, ``a <= 0 (silu)``,
``a == 0 (not an activation)``; :meth:`SparsityProbe.notes`).  Hoyer's sparsity is a ratio of norms
and takes no test.

Metrics (``C`` channels, ``N`` probed samples, ``P`` spatial positions per channel):

* ``channel_sparsity`` -- mean over channels of the fraction of zeros in that channel, over all
  samples and positions (the paper's per-channel sparsity, averaged);
* ``channel_sparsity_q10`` / ``_q50`` / ``_q90`` -- quantiles of that per-channel distribution;
* ``sample_sparsity`` -- mean over samples of the fraction of zeros in the sample's whole
  representation;
* ``dead_channel_fraction`` -- share of channels that are zero (off) for every probed sample and position;
* ``dormant_fraction`` -- ReDo's tau-dormant ratio (Sokar et al. 2023): with ``s_c`` the mean of
  ``|a|`` over every sample and position of channel ``c``, the share of channels with
  ``s_c / mean_c(s_c) <= tau`` (``tau`` = 0.025 by default).  It takes no zero test, and counts
  channels that are alive but contribute next to nothing next to the layer's others; a layer whose
  every channel is exactly 0 has ``mean_c(s_c) = 0`` and counts as wholly dormant (1);
* ``hoyer`` -- mean over samples of Hoyer's sparsity ``(sqrt(n) - L1/L2) / (sqrt(n) - 1)`` of the
  sample's representation (1 = a single non-zero, 0 = all equal; an all-zero sample counts as 1);
* ``class_sparsity_<label>`` -- fraction of zeros over the samples of each class, and
  ``class_sparsity_spread``, the largest minus the smallest of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from bnprobe.capture._layer_data import LayerData
from bnprobe.params import check_choice, check_float
from bnprobe.probes._protocol import ProbeContext, StreamingProbe
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch

EXACT_ZERO_ACTIVATIONS = ("relu", "relu6")
"""Activations whose output is exactly 0 for every input <= 0: their zero test is ``a == 0``."""
OFF_THRESHOLDS: dict[str, float] = {
    **dict.fromkeys(("silu", "gelu", "quick_gelu", "mish", "hard_mish", "hardswish", "leaky_relu", "prelu", "rrelu",
                     "elu", "celu", "selu", "hardtanh", "tanh"), 0.0),
    "sigmoid": 0.5, "hardsigmoid": 0.5,
}
"""Activation -> its value at input 0; its output is at or below that exactly when its input is <= 0,
the unit is off (zero test ``a <= threshold``)."""
ZERO_TESTS = ("auto", "exact")


@dataclass(frozen=True)
class ZeroTest:
    """When a layer's value counts as zero: ``|a| <= bound`` (``rule="exact"``) or ``a <= bound`` (``"off"``)."""

    rule: Literal["exact", "off"]
    bound: float
    activation: str | None
    """The activation the test was chosen for; None for a layer that is none."""

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """The boolean mask of ``acts`` that count as zero."""
        if self.rule == "off":
            return acts <= self.bound
        return acts == 0 if self.bound == 0 else acts.abs() <= self.bound  # the same test; 0 needs no abs

    def describe(self) -> str:
        """The test as the report and ``results.json`` write it: ``a <= 0 (silu)``, ``a == 0 (relu)``."""
        bound = f"{self.bound:g}" if float(f"{self.bound:g}") == self.bound else repr(self.bound)  # exact, short
        formula = f"a <= {bound}" if self.rule == "off" else "a == 0" if self.bound == 0 else f"|a| <= {bound}"
        return f"{formula} ({self.activation or 'not an activation'})"


def zero_test_for(activation: str | None, eps: float = 0.0, mode: str = "auto") -> ZeroTest:
    """The zero test of a layer that is the output of ``activation`` (module docstring), widened by ``eps``.

    ``mode="exact"`` gives ``|a| <= eps`` whatever the activation.
    """
    if mode == "auto" and activation in OFF_THRESHOLDS:
        return ZeroTest("off", OFF_THRESHOLDS[activation] + eps, activation)
    return ZeroTest("exact", eps, activation)


class SparsityAccumulator:
    """Running zero counts and magnitudes for one layer; memory is O(channels + samples + classes).

    ``activation`` and ``mode`` choose the zero test (:func:`zero_test_for`); without them it is ``|a| <= eps``.
    ``tau`` is the dormancy threshold of ``dormant_fraction``.
    """

    def __init__(self, eps: float = 0.0, activation: str | None = None, mode: str = "auto",
                 tau: float = 0.025) -> None:
        self.eps = eps
        self.tau = tau
        self.test = zero_test_for(activation, eps, mode)
        self.channel_zeros: torch.Tensor | None = None
        self.channel_magnitude: torch.Tensor | None = None
        """Per channel, the sum of ``|a|`` over every sample and position seen (float64)."""
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
        import torch

        acts = activations.detach().float()
        if acts.dim() == 1:
            acts = acts[:, None]
        per_sample_dims = tuple(range(1, acts.dim()))
        zero = self.test(acts)
        per_channel = zero.sum(dim=(0, *per_sample_dims[1:]), dtype=torch.float64)
        self.channel_zeros = per_channel if self.channel_zeros is None else self.channel_zeros + per_channel
        magnitude = acts.abs().sum(dim=(0, *per_sample_dims[1:]), dtype=torch.float64)
        self.channel_magnitude = magnitude if self.channel_magnitude is None else self.channel_magnitude + magnitude
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
        import torch

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
            "dormant_fraction": self._dormant_fraction(),
            "hoyer": float(torch.cat(self.hoyer).double().mean()),
        }
        per_class = {label: self.class_zeros[label] / self.class_total[label] for label in sorted(self.class_zeros)}
        for label, value in per_class.items():
            out[f"class_sparsity_{label}"] = float(value)
        out["class_sparsity_spread"] = float(max(per_class.values()) - min(per_class.values()))
        return out

    def _dormant_fraction(self) -> float:
        """ReDo's share of channels whose mean ``|a|`` is at most ``tau`` times the layer's mean over channels."""
        score = (self.channel_magnitude / self.channel_total).cpu().numpy()
        layer_mean = float(score.mean())
        if layer_mean == 0:
            return 1.0  # every channel is exactly 0: all dormant (0 / 0 otherwise)
        return float((score / layer_mean <= self.tau).mean())


def _hoyer(acts: torch.Tensor, dims: tuple[int, ...], n: int) -> torch.Tensor:
    """Hoyer sparsity of each sample's ``n`` values (over ``dims``), in float64; an all-zero sample is
    maximally sparse (1.0)."""
    import torch

    l1 = acts.abs().sum(dim=dims, dtype=torch.float64)
    if n < 2:
        return (l1 == 0).float()
    l2 = torch.linalg.vector_norm(acts, 2, dim=dims, dtype=torch.float64)
    root = math.sqrt(n)
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(1e-300), torch.full_like(l1, 1.0))
    return ((root - ratio) / (root - 1)).float()


@register_probe("sparsity")
class SparsityProbe(StreamingProbe):
    """Channel, sample, class and Hoyer sparsity of a layer, and its dormant channels, streamed during capture."""

    description = "fraction of zero (off) activations per channel, sample and class, by a zero test per layer; " \
                  "Hoyer sparsity; ReDo's dormant channels"
    key_metric = "channel_sparsity"
    metrics = {
        "channel_sparsity": Metric("mean over channels of the fraction of zeros in the channel, over every probed "
                                   "sample and position, by the layer's zero test: a == 0 after ReLU and at a conv "
                                   "or norm, a <= 0 after SiLU, GELU and others that go negative (its zero_test note)",
                                   "0 to 1"),
        "channel_sparsity_q10": Metric("10th percentile over channels of that per-channel fraction of zeros",
                                       "0 to 1"),
        "channel_sparsity_q50": Metric("median over channels of the per-channel fraction of zeros", "0 to 1"),
        "channel_sparsity_q90": Metric("90th percentile over channels of the per-channel fraction of zeros",
                                       "0 to 1"),
        "sample_sparsity": Metric("mean over samples of the fraction of zeros in the sample's whole representation",
                                  "0 to 1"),
        "dead_channel_fraction": Metric("share of channels that are zero (off) for every probed sample and "
                                        "position", "0 to 1"),
        "dormant_fraction": Metric("ReDo's tau-dormant ratio (Sokar et al. 2023): share of channels whose mean |a| "
                                   "over every probed sample and position is at most tau (default 0.025) times the "
                                   "mean of that over the layer's channels; 1 when every channel is exactly 0",
                                   "0 to 1"),
        "hoyer": Metric("mean over samples of Hoyer's sparsity (sqrt(n) - L1/L2) / (sqrt(n) - 1) of the sample's "
                        "representation; an all-zero sample counts as 1", "0 (all equal) to 1 (one non-zero)"),
        "class_sparsity_<label>": Metric("fraction of zeros over the samples of class <label> (one metric per "
                                         "class label)", "0 to 1"),
        "class_sparsity_spread": Metric("largest minus smallest class_sparsity_<label>: how much sparsity depends "
                                        "on the class", "0 to 1"),
    }

    def __init__(self, eps: float = 0.0, zero_test: str = "auto", tau: float = 0.025) -> None:
        self.eps = check_float("sparsity", "eps", eps, minimum=0.0)
        self.zero_test = check_choice("sparsity", "zero_test", zero_test, ZERO_TESTS)
        self.tau = check_float("sparsity", "tau", tau, minimum=0.0)

    def accumulator(self, layer: str, shape: tuple[int, ...], activation: str | None = None) -> SparsityAccumulator:
        """A fresh zero counter for ``layer``, the output of ``activation`` (which picks the zero test)."""
        return SparsityAccumulator(self.eps, activation, self.zero_test, self.tau)

    def notes(self, layer: LayerData | None, context: ProbeContext) -> dict[str, str]:
        """The zero test the layer was counted with, e.g. ``{"zero_test": "a <= 0 (silu)"}``."""
        return {"zero_test": self.state(layer).test.describe()}
