"""Norm surgery: make variants of a CNN with its BatchNorm layers swapped for something else.

bnprobe compares a model with BatchNorm (variant ``bn``) against copies of it whose BatchNorm layers
were replaced.  :func:`make_variant` deep-copies the model and then swaps, so every variant made from
one model starts from the same conv and linear weights; the copy's layer names stay those of the
original, so capture can line layers up across variants.

**Sources** (:data:`BATCHNORM_TYPES`): ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``, timm's norm-act
layers (``BatchNormAct2d``, ``SyncBatchNormAct``, ``FrozenBatchNormAct2d``) and torchvision's
``FrozenBatchNorm2d`` (which timm uses too).  A timm norm-act layer applies ``bn -> drop -> act`` in one
module; its replacement is a :class:`NormAct` holding the new norm plus the *same* ``drop`` and ``act``
objects under the same names, so ``bn1.act`` keeps its path and the activation is not lost.  (Swapping
such a layer for a bare ``nn.Identity`` silently drops its activation -- the bug of timm issue 1254,
where converting ``BatchNormAct2d`` to ``SyncBatchNorm`` lost it.)

**Targets** (one name -> factory table, :func:`list_targets`; a spec is ``NAME[:ARG][+bias][+skipinit]``):

``identity``
    No normalisation (:class:`IdentityNorm`, which hands on a copy of its input, as BatchNorm did).
``groupnorm``
    ``nn.GroupNorm`` with ``gcd(32, C)`` groups; ``groupnorm:G`` asks for ``G`` groups, which must
    divide every layer's channel count.
``layernorm``
    :class:`ChannelLayerNorm`: LayerNorm over the channels at each position (dim 1, the channels-last
    convention), for inputs of any rank >= 2.
``instancenorm``
    :class:`InstanceNorm`: affine instance norm (per sample and channel, over the positions), for
    inputs of any rank >= 2.
``frozen``
    :class:`ChannelAffine` ``x * scale + shift``, initialised to what the BatchNorm computes in eval
    mode (``scale = weight / sqrt(running_var + eps)``, ``shift = bias - running_mean * scale``).  The
    statistics are fixed for good; ``scale`` and ``shift`` are trainable parameters when the BatchNorm
    had trainable affine parameters (so the parameter count is unchanged) and buffers when it had none
    (``FrozenBatchNorm2d``, ``affine=False``).
``fold``
    Every BatchNorm that directly follows a conv or linear layer (found by ``torch.fx`` symbolic
    tracing, the conv's output going to the BatchNorm only) is folded into that layer's weight and
    bias, creating the bias when the layer had none; plain, grouped, depthwise and transposed convs
    fold.  A trained or loaded model then computes the same eval-mode function with no norm left.
    The layers that cannot fold -- not after a conv, the conv's output also read elsewhere, the model
    does not trace -- get the ``frozen`` replacement, which computes the same function too, and their
    record says why.

**bias** (``identity+bias``): BatchNorm's shift makes a bias in the layer before it redundant, so
CNNs build ``conv(bias=False) -> BN``, and swapping the BN for ``identity`` leaves the conv with no
bias at all -- "no normalisation" mixed up with "no bias".  ``+bias`` gives each BatchNorm's producing
conv or linear layer (found as ``fold`` finds it) a trainable, zero-initialised bias where it has
none; where there is no such layer (the norm does not follow a conv, the conv's output is read
elsewhere too, the model does not trace) the replacement itself is a :class:`ChannelBias`.  Only
``identity`` takes it: the other targets keep a per-channel shift of their own (GroupNorm, LayerNorm
and InstanceNorm's affine bias, ``frozen``'s shift, ``fold``'s folded bias).  A zero bias changes
nothing at initialisation: the variant starts as the bias-free one and can learn the offsets.

**skipinit** (:func:`apply_skipinit`, ``identity+skipinit``): in every residual block it recognises
the *last conv of the residual branch is zero-initialised* (Fixup-style; all its parameters), so each
block starts out as its shortcut.  Recognised: timm's ResNet/ResNeXt/SE-ResNet, legacy SENet, Res2Net,
ResNeSt, SKNet, RegNet, CSPNet/DarkNet and ByobNet (GERNet, ResNeXt-ts, ...) blocks, timm's
EfficientNet/MobileNet ``InvertedResidual``/``DepthwiseSeparableConv``/``EdgeResidual``, and
torchvision's ResNet, RegNet, MNASNet, MobileNetV2/V3 and EfficientNet blocks -- each only where the
block actually has a skip.  This form was chosen over a learnable zero gain because it adds no
parameters and no modules, so layer names and parameter counts stay comparable across variants.  The
branch starts at exactly zero when the new norm maps zero to zero (``identity``, ``groupnorm``,
``layernorm``, ``instancenorm``; not ``frozen`` or ``fold``, whose shift is kept).  Blocks of other
families are left as they are; when none is recognised the report says "no residual blocks recognised".
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import (
    Conv2dSame,
    FrozenBatchNormAct2d,
    get_notrace_functions,
    get_notrace_modules,
)
from timm.models import _efficientnet_blocks as timm_effnet
from timm.models import byobnet as timm_byobnet
from timm.models import cspnet as timm_cspnet
from timm.models import regnet as timm_regnet
from timm.models import res2net as timm_res2net
from timm.models import resnest as timm_resnest
from timm.models import resnet as timm_resnet
from timm.models import senet as timm_senet
from timm.models import sknet as timm_sknet
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models import mnasnet as tv_mnasnet
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import mobilenetv3 as tv_mobilenetv3
from torchvision.models import regnet as tv_regnet
from torchvision.models import resnet as tv_resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.errors import BnprobeError, NoBatchNormError, UnknownNameError

#: Every module type that counts as BatchNorm.  ``_BatchNorm`` covers ``BatchNorm1d/2d/3d``,
#: ``SyncBatchNorm`` and timm's ``BatchNormAct2d``/``SyncBatchNormAct``; the frozen kinds keep their
#: statistics and affine parameters as buffers and derive from ``nn.Module`` directly.
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, FrozenBatchNorm2d, FrozenBatchNormAct2d)


# --------------------------------------------------------------------------------------------------
# Replacement modules


class NormAct(nn.Module):
    """``norm -> drop -> act``: the replacement for a timm norm-act layer.

    ``drop`` and ``act`` are the replaced layer's own module objects, registered under the same child
    names, so the activation keeps both its behaviour and its module path (``bn1.act``).
    """

    def __init__(self, norm: nn.Module, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(x)))


class IdentityNorm(nn.Module):
    """The ``identity`` target: no normalisation, but a new tensor out, as from the BatchNorm it replaces.

    Returning the input itself (``nn.Identity``) would let an in-place activation after it (timm's
    ``inplace=True`` ReLU) overwrite a tensor that another branch still reads -- DPN's concatenated
    input, a pre-activation ResNet's shortcut -- and so change what the model computes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels (dim 1) at every position, for inputs of any rank >= 2."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.movedim(1, -1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class InstanceNorm(nn.GroupNorm):
    """Affine instance norm for inputs of any rank >= 2: a GroupNorm with one channel per group.

    Unlike ``nn.InstanceNorm2d`` it does not depend on the input rank (the BatchNorm it replaces may be
    1d, 2d or 3d) and keeps no running statistics, so train and eval mode compute the same thing.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_channels, num_channels, eps=eps, affine=True)


class ChannelBias(nn.Module):
    """Per-channel ``x + bias`` along dim 1, zero-initialised: a conv bias where no conv can hold it."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view((1, -1) + (1,) * (x.ndim - 2))

    def extra_repr(self) -> str:
        return f"{self.bias.shape[0]}"


class ChannelAffine(nn.Module):
    """Per-channel ``x * scale + shift`` along dim 1: a BatchNorm with its statistics frozen in."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, trainable: bool) -> None:
        super().__init__()
        if trainable:
            self.scale = nn.Parameter(scale.clone())
            self.shift = nn.Parameter(shift.clone())
        else:
            self.register_buffer("scale", scale.clone())
            self.register_buffer("shift", shift.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, trainable={isinstance(self.scale, nn.Parameter)}"


# --------------------------------------------------------------------------------------------------
# Finding BatchNorm layers


def find_batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every BatchNorm of any kind in ``model``, in registration order.

    Only the outermost one is listed when a BatchNorm holds another (timm's ``SplitBatchNorm2d``), since
    swapping the outer one removes the inner ones.  The root module itself has path ``""``.
    """
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        inside = any(path.startswith(f"{outer}.") or outer == "" for outer, _ in found)
        if isinstance(module, BATCHNORM_TYPES) and not inside:
            found.append((path, module))
    return found


def has_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` holds a BatchNorm of any kind in :data:`BATCHNORM_TYPES`."""
    return any(isinstance(m, BATCHNORM_TYPES) for m in model.modules())


def _require_batchnorm(model: nn.Module) -> None:
    if not has_batchnorm(model):
        raise NoBatchNormError(f"{type(model).__name__} has no BatchNorm layer: there is nothing to compare")


def _num_channels(bn: nn.Module) -> int:
    # torchvision's FrozenBatchNorm2d has no num_features, but always has a weight buffer
    return getattr(bn, "num_features", None) or bn.weight.shape[0]


def _own_params(module: nn.Module) -> int:
    """Parameters of ``module`` itself; a norm-act layer's activation is kept, so it is not counted."""
    return sum(p.numel() for p in module.parameters(recurse=False))


def _eval_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 such that ``bn`` in eval mode computes ``x * scale + shift``.

    Missing pieces take their neutral values: weight 1 and bias 0 without affine parameters, mean 0 and
    variance 1 without running statistics.
    """
    channels = _num_channels(bn)

    def stat(name: str, neutral: float) -> torch.Tensor:
        value = getattr(bn, name, None)
        if value is None:
            return torch.full((channels,), neutral, dtype=torch.float64)
        return value.detach().to("cpu", torch.float64)

    scale = stat("weight", 1.0) / torch.sqrt(stat("running_var", 1.0) + bn.eps)
    return scale, stat("bias", 0.0) - stat("running_mean", 0.0) * scale


# --------------------------------------------------------------------------------------------------
# Targets: name -> factory


def _identity(bn: nn.Module, arg: int | None) -> nn.Module:
    return IdentityNorm()


def _groupnorm(bn: nn.Module, arg: int | None) -> nn.Module:
    channels = _num_channels(bn)
    groups = math.gcd(32, channels) if arg is None else arg
    if channels % groups:
        raise BnprobeError(f"groupnorm:{groups} needs a channel count divisible by {groups}, but this layer "
                           f"has {channels} channels; pick a G that divides every layer's channels")
    return nn.GroupNorm(groups, channels, eps=bn.eps)


def _layernorm(bn: nn.Module, arg: int | None) -> nn.Module:
    return ChannelLayerNorm(_num_channels(bn), eps=bn.eps)


def _instancenorm(bn: nn.Module, arg: int | None) -> nn.Module:
    return InstanceNorm(_num_channels(bn), eps=bn.eps)


def _frozen(bn: nn.Module, arg: int | None) -> nn.Module:
    scale, shift = _eval_affine(bn)
    return ChannelAffine(scale, shift, trainable=_own_params(bn) > 0)


@dataclass(frozen=True)
class _Target:
    build: Callable[[nn.Module, int | None], nn.Module]
    """Replacement norm for one BatchNorm, given the spec's ``:ARG`` (None when not given)."""
    takes_arg: bool = False


_TARGETS: dict[str, _Target] = {
    "identity": _Target(_identity),
    "groupnorm": _Target(_groupnorm, takes_arg=True),
    "layernorm": _Target(_layernorm),
    "instancenorm": _Target(_instancenorm),
    "frozen": _Target(_frozen),
    "fold": _Target(_frozen),  # for the layers that cannot fold; folding itself needs the graph (_fold_plan)
}

_OPTIONS = ("bias", "skipinit")

_BIAS_TARGETS = ("identity",)
"""Targets ``+bias`` applies to: those that leave no per-channel shift of their own."""


def list_targets() -> list[str]:
    """Names of the norm targets :func:`swap_norms` accepts (not counting ``:ARG``/``+bias``/``+skipinit``)."""
    return list(_TARGETS)


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target spec ``NAME[:ARG][+bias][+skipinit]``."""

    name: str
    arg: int | None = None
    skipinit: bool = False
    bias: bool = False

    def __str__(self) -> str:
        arg = "" if self.arg is None else f":{self.arg}"
        return f"{self.name}{arg}{'+bias' if self.bias else ''}{'+skipinit' if self.skipinit else ''}"


def parse_target(spec: str) -> TargetSpec:
    """Look up a target spec such as ``groupnorm:8``, ``identity+bias`` or ``identity+skipinit``.

    Raises :class:`UnknownNameError` listing the valid names for an unknown target, and
    :class:`BnprobeError` for a malformed argument or option.
    """
    head, *options = spec.strip().lower().split("+")
    name, sep, raw_arg = head.partition(":")
    name = name.strip()
    if name not in _TARGETS:
        raise UnknownNameError(f"unknown norm target {name!r}; available: {', '.join(list_targets())}")
    options = [o.strip() for o in options]
    bad = [o for o in options if o not in _OPTIONS]
    if bad:
        raise BnprobeError(f"target {spec!r}: unknown option {bad[0]!r}; options: {', '.join(_OPTIONS)}")
    if "bias" in options and name not in _BIAS_TARGETS:
        raise BnprobeError(f"target {spec!r}: +bias applies to {', '.join(_BIAS_TARGETS)} only; {name} keeps a "
                           "per-channel shift of its own")
    arg = None
    if sep:
        if not _TARGETS[name].takes_arg:
            raise BnprobeError(f"target {name} takes no ':' argument, got {spec!r}")
        try:
            arg = int(raw_arg)
        except ValueError:
            arg = 0
        if arg < 1:
            raise BnprobeError(f"target {spec!r}: {name}:G needs a positive integer G, got {raw_arg!r}")
    return TargetSpec(name=name, arg=arg, skipinit="skipinit" in options, bias="bias" in options)


# --------------------------------------------------------------------------------------------------
# Fold: find conv/linear -> bn pairs with torch.fx

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
class _FoldPlan:
    producers: dict[str, str]
    """BatchNorm path -> path of the conv/linear it folds into."""
    reasons: dict[str, str]
    """BatchNorm path -> why it cannot fold."""
    trace_error: str = ""

    def summary(self) -> str:
        why = f" ({self.trace_error})" if self.trace_error else ""
        return f"fold: {len(self.producers)} folded, {len(self.reasons)} fell back to frozen{why}"


def _fold_plan(model: nn.Module, bn_paths: list[str]) -> _FoldPlan:
    """Decide, for each BatchNorm, whether it can fold into the layer that directly produces its input."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # any tracing failure (data-dependent control flow, ...) means: fall back
        why = f"the model does not trace with torch.fx ({type(exc).__name__})"
        return _FoldPlan({}, dict.fromkeys(bn_paths, why), trace_error=why)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    nodes = {n.target: n for n in graph.nodes if n.op == "call_module"}
    plan = _FoldPlan({}, {})
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
    if out_channels != _num_channels(bn):
        return None, f"{src.target} gives {out_channels} channels, the norm has {_num_channels(bn)}"
    if len(src.users) > 1 or calls[src.target] > 1:
        return None, f"the output of {src.target} is used elsewhere too"
    return src.target, ""


def _is_passthrough(model: nn.Module, node: object) -> bool:
    """True for a call of an ``nn.Identity`` module whose output goes nowhere else."""
    return (isinstance(node, fx.Node) and node.op == "call_module" and len(node.users) == 1
            and isinstance(model.get_submodule(node.target), nn.Identity))


def _fold_into(layer: nn.Module, bn: nn.Module) -> int:
    """Fold ``bn``'s eval-mode affine into ``layer`` (conv or linear) in place; return parameters added.

    A linear layer is folded as if its output were ``(batch, features)``, the one shape where
    ``BatchNorm1d`` normalises the linear layer's features.
    """
    scale, shift = _eval_affine(bn)
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


# --------------------------------------------------------------------------------------------------
# skipinit


#: Residual block type -> the path (inside the block) of the last conv of its residual branch, or None
#: when this instance has no skip connection.  Subclasses are found through the MRO.
_LAST_CONV: dict[type[nn.Module], Callable[[nn.Module], str | None]] = {
    timm_resnet.BasicBlock: lambda b: "conv2",
    timm_resnet.Bottleneck: lambda b: "conv3",
    timm_senet.SEResNetBlock: lambda b: "conv2",
    timm_senet.Bottleneck: lambda b: "conv3",
    timm_res2net.Bottle2neck: lambda b: "conv3",
    timm_resnest.ResNestBottleneck: lambda b: "conv3",
    timm_sknet.SelectiveKernelBasic: lambda b: "conv2.conv",
    timm_sknet.SelectiveKernelBottleneck: lambda b: "conv3.conv",
    timm_regnet.Bottleneck: lambda b: "conv3.conv" if b.downsample is not None else None,
    timm_cspnet.BottleneckBlock: lambda b: "conv3.conv",
    timm_cspnet.DarkBlock: lambda b: "conv2.conv",
    timm_cspnet.EdgeBlock: lambda b: "conv2.conv",
    timm_byobnet.BasicBlock: lambda b: "conv2_kxk.conv" if b.shortcut is not None else None,
    timm_byobnet.BottleneckBlock: lambda b: "conv3_1x1.conv" if b.shortcut is not None else None,
    timm_byobnet.DarkBlock: lambda b: "conv2_kxk.conv" if b.shortcut is not None else None,
    timm_byobnet.EdgeBlock: lambda b: "conv2_1x1.conv" if b.shortcut is not None else None,
    timm_effnet.DepthwiseSeparableConv: lambda b: "conv_pw" if b.has_skip else None,
    timm_effnet.InvertedResidual: lambda b: "conv_pwl" if b.has_skip else None,
    timm_effnet.EdgeResidual: lambda b: "conv_pwl" if b.has_skip else None,
    tv_resnet.BasicBlock: lambda b: "conv2",
    tv_resnet.Bottleneck: lambda b: "conv3",
    tv_regnet.ResBottleneckBlock: lambda b: "f.c.0",
    tv_mnasnet._InvertedResidual: lambda b: f"layers.{len(b.layers) - 2}" if b.apply_residual else None,
    tv_mobilenetv2.InvertedResidual: lambda b: f"conv.{len(b.conv) - 2}" if b.use_res_connect else None,
    tv_mobilenetv3.InvertedResidual: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
    tv_efficientnet.MBConv: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
    tv_efficientnet.FusedMBConv: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
}


def apply_skipinit(model: nn.Module) -> list[str]:
    """Zero-initialise the last conv of every recognised residual branch, in place (Fixup-style).

    Each recognised block then starts out as its shortcut, which lets a network without normalisation
    train from depth.  Returns the paths of the convs that were zeroed; an empty list means no residual
    block was recognised (see the module docstring for the families).
    """
    changed = []
    for path, block in model.named_modules():
        last_conv = next((_LAST_CONV[t] for t in type(block).__mro__ if t in _LAST_CONV), None)
        rel = last_conv(block) if last_conv else None
        if rel is None:
            continue
        with torch.no_grad():  # every parameter: timm's MixedConv2d holds one conv per kernel size
            for param in block.get_submodule(rel).parameters():
                param.zero_()
        changed.append(f"{path}.{rel}" if path else rel)
    return changed


# --------------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class SwapRecord:
    """What happened to one BatchNorm layer."""

    path: str
    old_type: str
    new_type: str
    params_before: int
    """Parameters of the BatchNorm itself (its kept activation is not counted)."""
    params_after: int
    """Parameters of the replacement norm, plus any bias ``fold`` or ``+bias`` added to the producing layer."""
    activation: str | None = None
    """Type name of the activation a norm-act layer carried and that was kept, else None."""
    note: str = ""


@dataclass
class SwapReport:
    """What :func:`swap_norms` did to a model, layer by layer."""

    target: str
    records: list[SwapRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_swapped(self) -> int:
        return len(self.records)

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.records)

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.records)

    @property
    def param_delta(self) -> int:
        """Change in the model's parameter count caused by the swap."""
        return self.params_after - self.params_before

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the summary numbers, every record and the notes."""
        return {
            "target": self.target,
            "n_swapped": self.n_swapped,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_delta": self.param_delta,
            "records": [asdict(r) for r in self.records],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------------
# Swapping


def _placed_like(module: nn.Module, bn: nn.Module) -> nn.Module:
    """``module`` on ``bn``'s device, in its floating dtype and train/eval mode."""
    tensors = itertools.chain(bn.parameters(recurse=False), bn.buffers(recurse=False))
    ref = next((t for t in tensors if t.is_floating_point()), None)
    if ref is not None:
        module.to(device=ref.device, dtype=ref.dtype)
    return module.train(bn.training)


def _replacement(model: nn.Module, path: str, bn: nn.Module, spec: TargetSpec,
                 plan: _FoldPlan | None) -> tuple[nn.Module, int, str]:
    """The new norm for the BatchNorm at ``path``, parameters added elsewhere, and a note."""
    if plan is not None and path in plan.producers:
        producer = plan.producers[path]
        added = _fold_into(model.get_submodule(producer), bn)
        # nn.Identity may hand on its input here: only this layer reads the producer's output
        return nn.Identity(), added, f"folded into {producer}" + (f" (bias added: +{added})" if added else "")
    try:
        norm = _TARGETS[spec.name].build(bn, spec.arg)
    except BnprobeError as exc:
        raise BnprobeError(f"layer {path}: {exc}") from None
    return norm, 0, f"fell back to frozen: {plan.reasons[path]}" if plan is not None else ""


def _add_bias(model: nn.Module, path: str, bn: nn.Module, norm: nn.Module,
              plan: _FoldPlan) -> tuple[nn.Module, int, str]:
    """``+bias`` for the BatchNorm at ``path``: the norm to use, parameters added, and a note.

    The producing layer gets a zero bias where it has none; with no producing layer the norm becomes a
    :class:`ChannelBias` (``+bias`` is only for ``identity``, so ``norm`` adds nothing of its own).
    """
    producer = plan.producers.get(path)
    if producer is None:
        return ChannelBias(_num_channels(bn)), 0, f"bias module added: {plan.reasons[path]}"
    layer = model.get_submodule(producer)
    if layer.bias is not None:
        return norm, 0, f"{producer} already has a bias"
    layer.bias = nn.Parameter(torch.zeros(_num_channels(bn), device=layer.weight.device, dtype=layer.weight.dtype),
                              requires_grad=layer.weight.requires_grad)
    return norm, layer.bias.numel(), f"bias added to {producer} (+{layer.bias.numel()})"


def _bias_note(records: list[SwapRecord]) -> str:
    in_layers = [r for r in records if r.note.startswith("bias added to")]
    modules = [r for r in records if r.note.startswith("bias module added")]
    added = sum(r.params_after for r in in_layers + modules)
    return (f"bias: zero-initialised biases added to {len(in_layers)} producing layers and {len(modules)} "
            f"ChannelBias modules (+{added:,} parameters)")


def swap_norms(model: nn.Module, target: str) -> tuple[nn.Module, SwapReport]:
    """A deep copy of ``model`` with every BatchNorm replaced as ``target`` says, and what was done.

    ``target`` is ``NAME[:ARG][+bias][+skipinit]`` with ``NAME`` from :func:`list_targets`.  The input model
    is never modified.  Raises :class:`NoBatchNormError` when the model has no BatchNorm, and
    :class:`UnknownNameError` / :class:`BnprobeError` for a bad target or a ``groupnorm:G`` that does not
    divide a layer's channels.
    """
    spec = parse_target(target)
    _require_batchnorm(model)
    model = copy.deepcopy(model)
    batchnorms = find_batchnorms(model)
    plan = _fold_plan(model, [p for p, _ in batchnorms]) if spec.name == "fold" or spec.bias else None
    fold = plan if spec.name == "fold" else None
    report = SwapReport(target=str(spec), notes=[fold.summary()] if fold is not None else [])
    for path, bn in batchnorms:
        norm, added, note = _replacement(model, path, bn, spec, fold)
        if spec.bias:
            norm, added, note = _add_bias(model, path, bn, norm, plan)
        norm = _placed_like(norm, bn)
        act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
        new: nn.Module = norm
        if act is not None or drop is not None:
            new = NormAct(norm, nn.Identity() if drop is None else drop, nn.Identity() if act is None else act)
            new.training = bn.training
        if path:
            model.set_submodule(path, new)
        else:
            model = new
        report.records.append(SwapRecord(
            path=path, old_type=type(bn).__name__, new_type=type(norm).__name__,
            params_before=_own_params(bn), params_after=_own_params(norm) + added,
            activation=None if act is None or isinstance(act, nn.Identity) else type(act).__name__,
            note=note,
        ))
    if spec.bias:
        report.notes.append(_bias_note(report.records) + (f" ({plan.trace_error})" if plan.trace_error else ""))
    if spec.skipinit:
        report.notes.append(_skipinit_note(model, apply_skipinit(model)))
    return model, report


def _skipinit_note(model: nn.Module, changed: list[str]) -> str:
    if not changed:
        return f"skipinit: no residual blocks recognised in {type(model).__name__}; nothing zero-initialised"
    shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
    return f"skipinit: zero-initialised the last conv of {len(changed)} residual branches ({shown})"


def make_variant(model: nn.Module, variant: str) -> tuple[nn.Module, SwapReport]:
    """A fresh copy of ``model`` for one variant of a study.

    ``"bn"`` is the unchanged reference (a deep copy, empty report); any other name is a target spec
    for :func:`swap_norms`.  Every variant is a deep copy taken before the swap, so all variants of one
    model start from the same conv and linear weights.  A model without BatchNorm is refused for every
    variant, ``bn`` included, since there would be nothing to compare.
    """
    if variant.strip().lower() != REFERENCE_VARIANT:
        return swap_norms(model, variant)
    _require_batchnorm(model)
    return copy.deepcopy(model), SwapReport(target=REFERENCE_VARIANT)
