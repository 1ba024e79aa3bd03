"""Attribution probes: how concentrated is what a trained model attends to?

Any attribution class of ``captum.attr`` can be named by its class name; the probe runs it on the
first ``samples`` probed inputs, each attributed to its *true* label, and summarises how the
attribution mass is spread:

* ``attribution`` -- input methods (``IntegratedGradients`` by default, ``Saliency``,
  ``InputXGradient``, ``DeepLift``, ``GuidedBackprop``, ``FeatureAblation``, ...): attributions over
  the input pixels, one result per run (``scope="model"``);
* ``layer_attribution`` -- methods built with a layer (``LayerGradCam`` by default,
  ``LayerConductance``, ``LayerIntegratedGradients``, ``LayerGradientXActivation``, ...): one result
  per captured layer, the layer being the module whose output is that layer.

Metrics, each computed on ``|attribution|`` flattened per sample and then averaged over samples:

* ``gini`` -- Gini coefficient (0: mass spread evenly over every element, ``(n-1)/n``: all of it on
  one element); the key metric, a measure of attribution sparsity;
* ``top5_mass`` -- share of the mass in the top 5 % of the elements (at least one element);
* ``convergence_delta`` -- mean ``|delta|`` of the completeness check, for the methods that offer one
  (``return_convergence_delta``: IntegratedGradients, DeepLift, LayerConductance, ...); absent for
  the others.

A sample whose attribution is zero everywhere has no distribution to measure; it is left out of the
``gini`` and ``top5_mass`` averages (both are NaN, stored as null, when every sample is).

Memory is bounded by ``internal_batch_size``: inputs are attributed that many samples at a time, and
methods that expand each sample into many forward passes (IntegratedGradients' ``n_steps``) get it as
their own ``internal_batch_size`` too, so no forward pass sees more rows than that.  Only the
per-sample numbers are kept between chunks.

During the probe the model is in eval mode and every module with an ``inplace`` flag (ReLU and
friends) runs out of place, since captum's hooks and gradients need the activations intact; training
flags, ``requires_grad`` and ``inplace`` flags are restored afterwards.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bnprobe._common import preserved_flags
from bnprobe.capture._layer_data import LayerData
from bnprobe.errors import BnprobeError
from bnprobe.params import check_int
from bnprobe.probes._protocol import Need, Probe, ProbeContext, Scope
from bnprobe.probes._registry import register_probe
from bnprobe.probes.metrics import Metric

if TYPE_CHECKING:
    import torch
    from torch import nn

TOP_PERCENT = 5
"""``top5_mass`` is the share of the attribution mass in this percentage of the elements."""

_SUPPLIED_TO_INIT = {"forward_func", "model", "layer"}
"""Constructor arguments the probe fills in; a class needing any other one cannot be built here."""

_EXCLUDED = {
    "ShapleyValues": "enumerates every ordering of the input elements and never finishes on an image",
    "LayerFeaturePermutation": "applies the target twice (captum 0.9) and fails on every classifier",
    "LayerFeatureAblation": "ablates the layer's elements one forward pass each: thousands of passes a sample on a "
                            "conv layer",
    "LRP": "needs a propagation rule for every layer, and the no-BN variants' replacements have none",
    "LayerLRP": "fails in captum 0.9 (no relevance is recorded for the layer)",
    "Lime": "fits a sparse surrogate over every pixel from 50 samples without a feature mask: all zeros",
}
"""Classes that would build but cannot give a result here, with the reason."""

_GRADIENTS_SET_WARNING = r"Input Tensor \d+ did not already require gradients"
"""captum's warning, once per chunk, that it made the inputs require gradients, as it should."""

_REPEATED_CALL = re.compile(r".+#(?P<call>\d+)")
"""Capture's name for the k-th call of a module that runs several times per forward pass."""


# --------------------------------------------------------------------------------------------------
# Summaries of one chunk of attributions

def gini(values: torch.Tensor) -> torch.Tensor:
    """Gini coefficient of each row of the non-negative ``(samples, elements)`` ``values``.

    ``G = 2 * sum_i i * x_(i) / (n * sum_i x_i) - (n + 1) / n`` with the row sorted ascending and
    ``i`` counted from 1.  Rows that sum to zero give NaN (no distribution to measure).
    """
    import torch

    n = values.shape[1]
    ordered = values.double().sort(dim=1).values
    rank = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    total = ordered.sum(dim=1)
    weighted = (ordered * rank).sum(dim=1)
    return torch.where(total > 0, 2 * weighted / (n * total) - (n + 1) / n, torch.nan)


def top_mass(values: torch.Tensor, percent: int = TOP_PERCENT) -> torch.Tensor:
    """Share of each row's sum held by its largest ``percent`` % of elements (rounded up, at least 1).

    Rows that sum to zero give NaN.
    """
    import torch

    n = values.shape[1]
    k = max(1, -(-n * percent // 100))
    values = values.double()
    total = values.sum(dim=1)
    top = values.topk(k, dim=1).values.sum(dim=1)
    return torch.where(total > 0, top / total, torch.nan)


def _per_sample(attributions: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``|attribution|`` of each sample as one row; a tuple (several inputs or outputs) is concatenated."""
    import torch

    parts = attributions if isinstance(attributions, tuple) else (attributions,)
    return torch.cat([part.detach().reshape(part.shape[0], -1).abs() for part in parts], dim=1)


# --------------------------------------------------------------------------------------------------
# Which captum classes can run here

@dataclass(frozen=True)
class CaptumMethod:
    """One captum attribution class and the arguments its constructor and ``attribute`` take."""

    cls: type
    init_params: frozenset[str]
    call_params: frozenset[str]

    @property
    def is_layer_method(self) -> bool:
        """Built with a ``layer`` (LayerGradCam, LayerConductance, GuidedGradCam, ...)."""
        return "layer" in self.init_params


@dataclass(frozen=True)
class CaptumCatalogue:
    """Captum's attribution classes: the ones the probes can run, and why the others cannot."""

    methods: dict[str, CaptumMethod]
    unsupported: dict[str, str]

    def names(self, layer: bool) -> list[str]:
        """Names of the runnable input (``layer=False``) or layer (``layer=True``) methods."""
        return sorted(n for n, m in self.methods.items() if m.is_layer_method == layer)


def _required(signature: inspect.Signature) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name for name, p in signature.parameters.items()
            if name != "self" and p.kind in kinds and p.default is inspect.Parameter.empty}


@functools.cache
def captum_catalogue() -> CaptumCatalogue:
    """Sort every concrete attribution class of ``captum.attr`` into runnable or not (and why).

    Runnable: the constructor needs nothing beyond the model (and the layer), and ``attribute`` needs
    nothing beyond the inputs.  Neuron methods attribute one chosen neuron, not the prediction, and
    are left out.  captum is imported here, on first use, not when bnprobe starts.
    """
    import captum.attr

    methods: dict[str, CaptumMethod] = {}
    unsupported: dict[str, str] = {}
    for name in dir(captum.attr):
        cls = getattr(captum.attr, name)
        if not (inspect.isclass(cls) and issubclass(cls, captum.attr.Attribution)) or inspect.isabstract(cls) \
                or not callable(getattr(cls, "attribute", None)):
            continue
        init, call = inspect.signature(cls.__init__), inspect.signature(cls.attribute)
        missing_init = _required(init) - _SUPPLIED_TO_INIT
        missing_call = _required(call) - {"inputs"}
        if "neuron_selector" in call.parameters:
            unsupported[name] = "attributes a single neuron, not the prediction"
        elif missing_init or missing_call:
            unsupported[name] = f"needs {', '.join(sorted(missing_init | missing_call))}, which bnprobe does not supply"
        elif name in _EXCLUDED:
            unsupported[name] = _EXCLUDED[name]
        else:
            methods[name] = CaptumMethod(cls, frozenset(init.parameters), frozenset(call.parameters))
    return CaptumCatalogue(methods, unsupported)


def resolve_method(owner: str, method: Any, layer: bool) -> str:
    """The canonical captum class name for ``method`` (case-insensitive), or a one-line error."""
    catalogue = captum_catalogue()
    valid = catalogue.names(layer)
    known = {n.lower(): n for n in [*catalogue.methods, *catalogue.unsupported]}
    name = known.get(method.lower()) if isinstance(method, str) else None
    if name in valid:
        return name
    listed = f"valid: {', '.join(valid)}"
    if name in catalogue.unsupported:
        raise BnprobeError(f"{owner}: captum's {name} {catalogue.unsupported[name]}; {listed}")
    if name is not None:
        kind, other = ("a layer", "layer_attribution") if catalogue.methods[name].is_layer_method \
            else ("an input", "attribution")
        raise BnprobeError(f"{owner}: {name} is {kind} method; use {other}(method={name}); {listed}")
    raise BnprobeError(f"{owner}: method must name a captum.attr class, got {method!r}; {listed}")


# --------------------------------------------------------------------------------------------------
# The model as captum needs it

@contextmanager
def _attributable(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` as captum expects it; every flag changed here is restored afterwards.

    Eval mode; gradients enabled and every parameter requiring them (layer methods such as
    LayerDeepLift hook tensors that only exist when the graph reaches the parameters; captum takes
    gradients with ``torch.autograd.grad``, so no ``.grad`` is written); activations out of place.
    """
    import torch

    with preserved_flags(model, training=False, requires_grad=True, inplace=False), torch.enable_grad():
        yield model


@contextmanager
def _layer_target(model: nn.Module, name: str, module: nn.Module) -> Iterator[nn.Module]:
    """The module captum should hook for the captured layer ``name``.

    Usually ``module`` itself.  For ``path#k``, the k-th call of a module that runs several times per
    forward (torchvision's ResNet reuses one ReLU per block), captum would only ever see one of the
    calls; so the k-th call's output is routed through a private ``nn.Identity`` (counting calls from
    each forward of ``model``) and that identity is the layer captum hooks.
    """
    from torch import nn

    match = _REPEATED_CALL.fullmatch(name)
    if match is None:
        yield module
        return
    wanted, proxy, calls = int(match.group("call")), nn.Identity(), [0]

    def reset(_model: nn.Module, _args: Any) -> None:
        calls[0] = 0

    def route(_module: nn.Module, _args: Any, output: Any) -> Any:
        calls[0] += 1
        return proxy(output) if calls[0] - 1 == wanted else None

    handles = [model.register_forward_pre_hook(reset), module.register_forward_hook(route)]
    try:
        yield proxy
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------------------------------
# The probes

class _CaptumProbe(Probe):
    """What the input and the layer attribution probes share: configuration, the loop, the metrics."""

    needs: ClassVar[Need] = "model"
    key_metric = "gini"
    metrics: ClassVar[dict[str, Metric]] = {
        "gini": Metric("mean over samples of the Gini coefficient of |attribution| (all-zero samples left out; "
                       "null when every sample is)", "0 (spread evenly) to (n-1)/n (one element)"),
        "top5_mass": Metric("mean over samples of the share of |attribution| in the top 5 % of the elements "
                            "(at least one)", "0.05 or more (even spread) to 1"),
        "convergence_delta": Metric("mean |delta| of captum's completeness check; only for methods that offer "
                                    "one (IntegratedGradients, DeepLift, LayerConductance, ...)", "0 and up",
                                    "lower is better"),
    }
    layer_methods: ClassVar[bool] = False

    def _configure(self, method: str, samples: int, internal_batch_size: int, n_steps: int) -> None:
        owner = f"probe {self.name}"
        self.method = resolve_method(owner, method, self.layer_methods)
        self.samples = check_int(owner, "samples", samples, minimum=1)
        self.internal_batch_size = check_int(owner, "internal_batch_size", internal_batch_size, minimum=1)
        self.n_steps = check_int(owner, "n_steps", n_steps, minimum=2)

    def _attribute(self, context: ProbeContext, layer: tuple[str, nn.Module] | None = None) -> dict[str, float]:
        """Attribute the first ``samples`` probed inputs to their labels and summarise (module docstring)."""
        import torch

        spec = captum_catalogue().methods[self.method]
        inputs, labels = context.inputs[: self.samples], context.labels[: self.samples]
        if len(inputs) == 0:
            raise BnprobeError(f"probe {self.key}: there are no probed inputs to attribute")
        ginis, tops, deltas = [], [], []
        with _attributable(context.model) as model, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GRADIENTS_SET_WARNING)
            with _layer_target(model, *layer) if layer else nullcontext() as target:
                method = spec.cls(model, target) if layer else spec.cls(model)
                for start in range(0, len(inputs), self.internal_batch_size):
                    stop = start + self.internal_batch_size
                    x = inputs[start:stop].to(context.device)
                    out = method.attribute(x, **self._call_arguments(spec, labels[start:stop].to(context.device)))
                    if "return_convergence_delta" in spec.call_params:
                        out, delta = out
                        deltas.append(delta.detach().abs().double().reshape(-1).cpu())
                    values = _per_sample(out)
                    ginis.append(gini(values).cpu())
                    tops.append(top_mass(values).cpu())
        result = {"gini": float(torch.cat(ginis).nanmean()), "top5_mass": float(torch.cat(tops).nanmean())}
        if deltas:
            result["convergence_delta"] = float(torch.cat(deltas).mean())
        return result

    def _call_arguments(self, spec: CaptumMethod, target: torch.Tensor) -> dict[str, Any]:
        """The ``attribute`` keywords this method accepts, out of the ones the probe sets."""
        wanted = {"target": target, "n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size,
                  "return_convergence_delta": True}
        return {k: v for k, v in wanted.items() if k in spec.call_params}


@register_probe("attribution")
class AttributionProbe(_CaptumProbe):
    """Sparsity of a captum input attribution (IntegratedGradients by default), once per run."""

    description = "captum input attribution to the true label: Gini and top-5% mass of |attribution|"
    scope: ClassVar[Scope] = "model"

    def __init__(self, method: str = "IntegratedGradients", samples: int = 256, internal_batch_size: int = 128,
                 n_steps: int = 50) -> None:
        self._configure(method, samples, internal_batch_size, n_steps)

    def measure(self, layer: LayerData | None, context: ProbeContext) -> dict[str, float]:
        """Attribution metrics of the run (``layer`` is None: this probe is model-scoped)."""
        return self._attribute(context)


@register_probe("layer_attribution")
class LayerAttributionProbe(_CaptumProbe):
    """Sparsity of a captum layer attribution (LayerGradCam by default), per captured layer."""

    description = "captum layer attribution (e.g. GradCAM) to the true label: Gini and top-5% mass per layer"
    scope: ClassVar[Scope] = "layer"
    layer_methods: ClassVar[bool] = True

    def __init__(self, method: str = "LayerGradCam", samples: int = 256, internal_batch_size: int = 128,
                 n_steps: int = 50) -> None:
        self._configure(method, samples, internal_batch_size, n_steps)

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """Attribution metrics of ``layer``, attributing to the module whose output it is."""
        module = context.layer_modules.get(layer.name)
        if module is None:
            raise BnprobeError(f"probe {self.key}: no module is known for layer {layer.name}; "
                               "the run's context must map captured layers to their modules")
        return self._attribute(context, (layer.name, module))
