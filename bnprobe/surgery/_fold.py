"""Fold planning: which BatchNorm directly follows a conv or linear layer (found with torch.fx), and
folding its eval-mode affine into that layer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from timm.layers import Conv2dSame, get_notrace_functions, get_notrace_modules
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from bnprobe.surgery._batchnorm import BATCHNORM_TYPES, eval_affine, num_channels

#: Layer types whose output is linear in their own ``weight`` and ``bias``, so scaling those folds a norm.
#: Subclasses with a forward of their own (timm's weight-standardising ``StdConv2d``, ...) are not folded.
_FOLDABLE: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    Conv2dSame,
)


class _LeafTracer(fx.Tracer):
    """Records module calls: BatchNorms, conv/linear layers and timm's untraceable modules are leaves."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self._leaves = (*get_notrace_modules(), *BATCHNORM_TYPES, _ConvNd, nn.Linear)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, module_qualified_name)


@dataclass
class FoldPlan:
    producers: dict[str, str]
    """BatchNorm path -> path of the conv/linear it folds into."""
    reasons: dict[str, str]
    """BatchNorm path -> why it cannot fold."""
    trace_error: str = ""

    def summary(self) -> str:
        why = f" ({self.trace_error})" if self.trace_error else ""
        return f"fold: {len(self.producers)} folded, {len(self.reasons)} fell back to frozen{why}"


def fold_plan(model: nn.Module, bn_paths: list[str]) -> FoldPlan:
    """Decide, for each BatchNorm, whether it can fold into the layer that directly produces its input."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # any tracing failure (data-dependent control flow, ...) means: fall back
        why = f"the model does not trace with torch.fx ({type(exc).__name__})"
        return FoldPlan({}, dict.fromkeys(bn_paths, why), trace_error=why)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}
    plan = FoldPlan({}, {})
    for path in bn_paths:
        if path not in nodes:
            plan.reasons[path] = "not reached by torch.fx tracing (inside an untraced module)"
            continue
        producer, why = _producer(model, nodes[path], calls)
        if producer is None:
            plan.reasons[path] = why
        else:
            plan.producers[path] = producer
    return plan


def _producer(model: nn.Module, bn_node: fx.Node, calls: Counter) -> tuple[str | None, str]:
    """The conv/linear ``bn_node`` can fold into, or ``(None, why not)``."""
    bn = model.get_submodule(bn_node.target)
    src = bn_node.args[0] if bn_node.args else None
    while _is_passthrough(model, src):  # e.g. timm's act=Identity between a conv and a second norm
        src = src.args[0]
    if calls[bn_node.target] > 1:
        return None, "called more than once per forward"
    if not (isinstance(src, fx.Node) and src.op == "call_module"):
        return None, "not directly after a conv or linear layer"
    layer = model.get_submodule(src.target)
    if not isinstance(layer, (_ConvNd, nn.Linear)):
        return None, f"follows {type(layer).__name__} {src.target}, not a conv or linear layer"
    foldable = type(layer).forward in {t.forward for t in _FOLDABLE}
    if not (foldable and isinstance(layer.weight, nn.Parameter)):  # weight norm makes weight a computed value
        return None, f"{type(layer).__name__} {src.target} computes its output its own way"
    if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
        return None, f"{type(bn).__name__} after linear layer {src.target}"
    out_channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if out_channels != num_channels(bn):
        return None, f"{src.target} gives {out_channels} channels, the norm has {num_channels(bn)}"
    if len(src.users) > 1 or calls[src.target] > 1:
        return None, f"the output of {src.target} is used elsewhere too"
    return src.target, ""


def _is_passthrough(model: nn.Module, node: object) -> bool:
    """True for a call of an ``nn.Identity`` module whose output goes nowhere else."""
    return (isinstance(node, fx.Node) and node.op == "call_module" and len(node.users) == 1
            and isinstance(model.get_submodule(node.target), nn.Identity))


def fold_into(layer: nn.Module, bn: nn.Module) -> int:
    """Fold ``bn``'s eval-mode affine into ``layer`` (conv or linear) in place; return parameters added.

    A linear layer is folded as if its output were ``(batch, features)``, the one shape where
    ``BatchNorm1d`` normalises the linear layer's features.
    """
    scale, shift = eval_affine(bn)
    weight = layer.weight.detach().to("cpu", torch.float64)
    if isinstance(layer, _ConvTransposeNd):  # weight is (in, out / groups, *kernel)
        groups = layer.groups
        per_group = scale.view(groups, 1, -1, *([1] * (weight.ndim - 2)))
        weight = (weight.unflatten(0, (groups, -1)) * per_group).flatten(0, 1)
    else:  # weight is (out, ...)
        weight = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
    bias = torch.zeros_like(scale) if layer.bias is None else layer.bias.detach().to("cpu", torch.float64)
    bias = bias * scale + shift
    ref = layer.weight
    with torch.no_grad():
        ref.copy_(weight.to(ref))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias))
            return 0
    layer.bias = nn.Parameter(bias.to(ref), requires_grad=ref.requires_grad)
    return layer.bias.numel()
