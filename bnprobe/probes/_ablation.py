"""Cumulative channel ablation (Morcos et al., ICLR 2018): how a model's test accuracy falls as one
layer's channels are zeroed, the most class-selective first or in random order.

For each captured layer that has a module (a functional activation has none: the note ``not_ablated``
names those left out), a forward hook sets channels of the module's output (dimension 1) to exactly 0
-- for ``path#k``, of the k-th call's output only.  The ablation is cumulative: at fraction ``f`` the
first ``round(f * C)`` channels (halves up; ``C`` the layer's channels) of an order are zeroed.

* **selectivity order**: each channel's class selectivity index, the ``selectivity`` probe's
  (:func:`~bnprobe.probes._selectivity.selectivity_index`, on the channel's spatial mean over the
  *probed* samples), highest first.  Channels without an index (dead, or with a negative class mean)
  come last, in channel order; ``ranked_fraction`` says how many had one, and a layer where none had
  one gets no selectivity-order numbers (null).
* **random orders**: ``orders`` permutations of the channels from ``numpy.random.default_rng(seed)``,
  the same for every run and variant, so that the runs of a layer pair.

Accuracy is measured on held-out test images (:attr:`ProbeContext.held_out`), never on the probed
samples the order was read from (ranking channels and scoring the ranking on the same samples would
flatter it): ``images`` of them at most, drawn with ``seed``, the same for every run (the note
``test_images`` says how many), in eval mode and float32.  Normalisation layers after an ablated one
keep their running statistics, as in Morcos et al.

A curve is the accuracy against the fraction actually ablated, ``round(f * C) / C``, measured at 0, at
1 and at the ``fractions`` between.  Its area (trapezoid rule over 0..1) and the fraction where it
first falls to half the unablated accuracy (linear interpolation between the measured points; null
if it never does) sum it up; the random-order curve is the mean over the orders.

Cost: one forward pass over the images per layer and distinct set of ablated channels, at most
``1 + (1 + orders) * (len(fractions) - 2)`` per layer with 0 and 1 counted in ``fractions``, plus one
unablated pass over the images and one pass over the probed samples for the selectivity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bnprobe._common import preserved_flags
from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.params import check_float, check_int
from bnprobe.probes._attribution import _layer_target
from bnprobe.probes._protocol import Need, Probe, ProbeContext, Scope
from bnprobe.probes._registry import register_probe
from bnprobe.probes._selectivity import activity_class_means, selectivity_index
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bnprobe.data import Split

DEFAULT_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
MAX_FRACTIONS = 11
"""Fractions measured at most, 0 and 1 included: each costs a forward pass per order and layer."""
MAX_IMAGES = 5000
"""Held-out images scored at most: the probe's cost is its forward passes over them."""


# --------------------------------------------------------------------------------------------------
# Curves

def ablated_count(fraction: float, channels: int) -> int:
    """How many of ``channels`` the fraction ablates: ``round(fraction * channels)``, halves up."""
    return math.floor(fraction * channels + 0.5)


def curve_area(fractions: np.ndarray, accuracy: np.ndarray) -> float:
    """Trapezoid-rule area under ``accuracy`` over ``fractions`` (non-decreasing, from 0 to 1)."""
    return float(np.sum(np.diff(fractions) * (accuracy[1:] + accuracy[:-1]) / 2))


def half_fraction(fractions: np.ndarray, accuracy: np.ndarray) -> float:
    """The first fraction at which ``accuracy`` falls to half of ``accuracy[0]`` (the unablated) or below,
    linearly interpolated between the measured points; NaN if it never does, or ``accuracy[0]`` is not > 0."""
    target = accuracy[0] / 2
    if not accuracy[0] > 0:
        return math.nan
    for i in range(1, len(accuracy)):
        if accuracy[i] <= target:  # and accuracy[i - 1] > target: the first such point
            step = (accuracy[i - 1] - target) / (accuracy[i - 1] - accuracy[i])
            return float(fractions[i - 1] + step * (fractions[i] - fractions[i - 1]))
    return math.nan


def selectivity_order(index: np.ndarray) -> np.ndarray:
    """The channels by selectivity index, highest first; channels without one (NaN) last; ties in channel order."""
    return np.argsort(-index, kind="stable")  # numpy sorts NaN last


# --------------------------------------------------------------------------------------------------
# The model, hooked

class _Activity:
    """Forward hook: keeps each output channel's spatial mean per sample, on the CPU."""

    def __init__(self, owner: str, layer: str) -> None:
        self.owner, self.layer, self.batches = owner, layer, []

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> None:
        import torch

        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            what = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            raise BnprobeError(f"{self.owner}: layer {self.layer}'s module gives {what}, not a (batch, channels, "
                               "...) tensor whose channels could be zeroed")
        output = output.detach().float()
        self.batches.append((output.flatten(2).mean(2) if output.dim() > 2 else output).cpu())

    def activity(self) -> np.ndarray:
        """``(samples, channels)``: every batch seen, in order."""
        import torch

        return torch.cat(self.batches).numpy()


class _Zeroing:
    """Forward hook: sets the output channels last :meth:`select`-ed to 0 (none at first)."""

    def __init__(self, channels: int, device: torch.device) -> None:
        import torch

        self.mask = torch.zeros(channels, dtype=torch.bool, device=device)

    def select(self, ablated: np.ndarray) -> None:
        """Zero the channels ``ablated`` from now on, and only those."""
        import torch

        self.mask.fill_(False)
        self.mask[torch.from_numpy(ablated).to(self.mask.device)] = True

    def __call__(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.masked_fill(self.mask.view(1, -1, *[1] * (output.dim() - 2)), 0)


@contextmanager
def _zeroing(module: nn.Module, channels: int, device: torch.device) -> Iterator[_Zeroing]:
    """A :class:`_Zeroing` hook on ``module`` for the block, removed afterwards (an error included)."""
    zeroing = _Zeroing(channels, device)
    handle = module.register_forward_hook(zeroing)
    try:
        yield zeroing
    finally:
        handle.remove()


@contextmanager
def _on(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` on ``device`` and in eval mode for the block; back where and as it was afterwards."""
    import torch

    home = next(iter(model.parameters()), torch.empty(0)).device
    if home != device:
        model.to(device)
    try:
        with preserved_flags(model, training=False), torch.no_grad():
            yield model
    finally:
        if home != device:
            model.to(home)


# --------------------------------------------------------------------------------------------------
# The probe

@register_probe("ablation")
class AblationProbe(Probe):
    """Test accuracy as each layer's channels are zeroed cumulatively: most class-selective first, and at random.

    Parameters
    ----------
    fractions:
        The fractions of a layer's channels to ablate (default 0, 0.1, 0.25, 0.5, 0.75, 1); 0 and 1
        are always measured, and 11 fractions at most.
    orders:
        How many random orders (default 3), drawn with ``seed``.
    images:
        How many held-out test images to score (default 1000, at most 5000; all of them when the test
        split has fewer), drawn with ``seed``.
    seed:
        Draws the random orders and the test images (default 0), the same for every run.
    batch_size:
        Images per forward pass (default 256).
    """

    description: ClassVar[str] = ("test accuracy as a layer's channels are zeroed cumulatively, most class-selective "
                                  "first (Morcos et al. 2018) and in random orders")
    needs: ClassVar[Need] = "model"
    scope: ClassVar[Scope] = "model"
    key_metric: ClassVar[str] = "auc_selective"
    metrics: ClassVar[dict[str, Metric]] = {
        "auc_selective": Metric("area (trapezoid rule over 0..1) under held-out test accuracy against the fraction "
                                "of the layer's channels zeroed, round(f*C)/C, the most class-selective first "
                                "(Morcos et al. 2018's index on the probed samples); higher: the model leans less on "
                                "its most selective channels; null when no channel has an index",
                                "0 to 1 (accuracy 1 however many are zeroed)"),
        "auc_random": Metric("the same area for channels zeroed in random order, mean over the seeded orders",
                             "0 to 1"),
        "auc_random_std": Metric("standard deviation (ddof 1) of that area over the random orders; null for one "
                                 "order", "0 and up"),
        "half_fraction_selective": Metric("first fraction of channels zeroed (most selective first) at which test "
                                          "accuracy falls to half the unablated accuracy, linearly interpolated "
                                          "between the measured fractions; null when it never does",
                                          "0 to 1"),
        "half_fraction_random": Metric("the same fraction on the mean random-order curve; null when it never halves",
                                       "0 to 1"),
        "accuracy_selective_<fraction>": Metric("held-out test accuracy with the first round(fraction*C) channels "
                                                "of the selectivity order zeroed (one metric per fraction; 0: "
                                                "unablated)", "0 to 1"),
        "accuracy_random_<fraction>": Metric("held-out test accuracy with round(fraction*C) channels zeroed, mean "
                                             "over the random orders (one metric per fraction)", "0 to 1"),
        "ranked_fraction": Metric("share of the layer's channels that have a selectivity index (not dead, no "
                                  "negative class mean on the probed samples); the others are zeroed last in the "
                                  "selectivity order", "0 to 1"),
        "channels": Metric("the layer's channels C (dimension 1 of its module's output)", "1 and up"),
    }

    def __init__(self, fractions: Sequence[float] = DEFAULT_FRACTIONS, orders: int = 3, images: int = 1000,
                 seed: int = 0, batch_size: int = 256) -> None:
        owner = "probe ablation"
        self.fractions = _checked_fractions(owner, fractions)
        self.orders = check_int(owner, "orders", orders, minimum=1)
        self.images = check_int(owner, "images", images, minimum=1)
        if self.images > MAX_IMAGES:
            raise BnprobeError(f"{owner}: images must be <= {MAX_IMAGES}, got {images}; every fraction, order and "
                               "layer is a forward pass over them")
        self.seed = check_int(owner, "seed", seed, minimum=0)
        self.batch_size = check_int(owner, "batch_size", batch_size, minimum=1)

    def measure(self, layer: LayerData | None, context: ProbeContext) -> dict[str, dict[str, float]]:
        """Each ablatable layer's curves, filed by layer (``layer`` is None: this probe is model-scoped)."""
        targets = dict(context.layer_modules)
        if not targets:
            raise BnprobeError(f"probe {self.key}: no captured layer has a module whose output could be zeroed")
        test = self._test_split(context)
        labels = context.labels.cpu().numpy()
        numbers = {}
        with _on(context.model, context.device) as model, ExitStack() as routes:
            modules = {name: routes.enter_context(_layer_target(model, name, module))
                       for name, module in targets.items()}
            activity = self._activity(model, modules, context)
            unablated = self._accuracy(model, test)
            for name, module in modules.items():
                means = activity_class_means(activity[name], labels, f"probe {self.key}: layer {name}")
                index = selectivity_index(means)
                with _zeroing(module, index.size, context.device) as zeroing:
                    numbers[name] = self._layer_numbers(index, unablated, zeroing, lambda: self._accuracy(model, test))
        return numbers

    def _layer_numbers(self, index: np.ndarray, unablated: float, zeroing: _Zeroing,
                       accuracy: Callable[[], float]) -> dict[str, float]:
        """One layer's metrics from its channels' selectivity ``index``: ``accuracy`` is measured once per
        distinct set of channels that ``zeroing`` zeroes."""
        channels = index.size
        seen: dict[frozenset[int], float] = {frozenset(): unablated}

        def curve(order: np.ndarray) -> np.ndarray:
            points = []
            for fraction in self.fractions:
                ablated = order[:ablated_count(fraction, channels)]
                key = frozenset(ablated.tolist())
                if key not in seen:
                    zeroing.select(ablated)
                    seen[key] = accuracy()
                points.append(seen[key])
            return np.array(points)

        xs = np.array([ablated_count(f, channels) / channels for f in self.fractions])
        rng = np.random.default_rng(self.seed)
        randoms = np.stack([curve(rng.permutation(channels)) for _ in range(self.orders)])
        ranked = ~np.isnan(index)
        selective = curve(selectivity_order(index)) if ranked.any() else np.full(len(self.fractions), math.nan)
        mean = randoms.mean(axis=0)
        areas = [curve_area(xs, one) for one in randoms]
        out = {"auc_selective": curve_area(xs, selective), "auc_random": float(np.mean(areas)),
               "auc_random_std": float(np.std(areas, ddof=1)) if self.orders > 1 else math.nan,
               "half_fraction_selective": half_fraction(xs, selective), "half_fraction_random": half_fraction(xs, mean)}
        for fraction, chosen, shuffled in zip(self.fractions, selective, mean, strict=True):
            out[f"accuracy_selective_{fraction:g}"] = float(chosen)
            out[f"accuracy_random_{fraction:g}"] = float(shuffled)
        return {**out, "ranked_fraction": float(ranked.mean()), "channels": float(channels)}

    def _activity(self, model: nn.Module, modules: dict[str, nn.Module], context: ProbeContext,
                  ) -> dict[str, np.ndarray]:
        """Every layer's ``(samples, channels)`` spatial means over the probed samples: one pass."""
        taps = {name: _Activity(f"probe {self.key}", name) for name in modules}
        handles = [module.register_forward_hook(taps[name]) for name, module in modules.items()]
        try:
            for start in range(0, len(context.inputs), self.batch_size):
                model(context.inputs[start:start + self.batch_size].to(context.device))
        finally:
            for handle in handles:
                handle.remove()
        return {name: tap.activity() for name, tap in taps.items()}

    def _accuracy(self, model: nn.Module, test: Split) -> float:
        """Top-1 accuracy of ``model`` on ``test``, in float32."""
        from bnprobe.train import evaluate

        return evaluate(model, test, device=test.x.device, batch_size=self.batch_size, precision="fp32")[1]

    def _test_split(self, context: ProbeContext) -> Split:
        """The held-out images scored: at most ``images`` of them, drawn with ``seed``, on the run's device."""
        import torch

        from bnprobe.data import Split

        x, y = self._held_out(context)
        chosen = torch.from_numpy(np.sort(np.random.default_rng(self.seed).permutation(len(x))[:self.images]))
        return Split(x[chosen.to(x.device)].to(context.device), y[chosen.to(y.device)].to(context.device))

    def _held_out(self, context: ProbeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The context's held-out images and labels, or a one-line error saying how to give them."""
        import torch

        if context.held_out is None:
            raise BnprobeError(f"probe {self.key} scores the model on held-out test images, and the run has none; "
                               "give them: run_probes(captured, probes, held_out=(test_x, test_y))")
        x, y = (torch.as_tensor(part) for part in context.held_out)
        if len(x) == 0 or len(x) != len(y):
            raise BnprobeError(f"probe {self.key}: the held-out images ({len(x)}) and labels ({len(y)}) must be as "
                               "many, and at least one")
        return x, y

    def notes(self, layer: LayerData | None, context: ProbeContext) -> dict[str, str]:
        """``test_images``: how many held-out images were scored; ``not_ablated``: captured layers without a module."""
        total = len(self._held_out(context)[0])
        notes = {"test_images": f"accuracy on {min(self.images, total)} of {total} held-out test images, drawn with "
                                f"seed {self.seed}, the same for every run"}
        missing = [data.name for data in context.layers if data.name not in context.layer_modules]
        if missing:
            notes["not_ablated"] = f"no module to hook (functional activations): {', '.join(missing)}"
        return notes


def _checked_fractions(owner: str, fractions: Any) -> tuple[float, ...]:
    """``fractions`` with 0 and 1, sorted and distinct, each named apart in the metric names; else a one-line error."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise BnprobeError(f"{owner}: fractions must be a list of fractions of the channels, e.g. [0.25, 0.5], "
                           f"got {fractions!r}")
    values = tuple(sorted({0.0, 1.0, *(check_float(owner, "fractions", f, minimum=0.0, maximum=1.0)
                                       for f in fractions)}))
    if len(values) > MAX_FRACTIONS:
        raise BnprobeError(f"{owner}: fractions holds {len(values)} values with 0 and 1, at most {MAX_FRACTIONS}; "
                           "each is a forward pass per order and layer")
    if len({f"{f:g}" for f in values}) < len(values):
        raise BnprobeError(f"{owner}: fractions {', '.join(map(repr, values))} are too close to name apart; "
                           "give them to at most 6 significant digits")
    return values
