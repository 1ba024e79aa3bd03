"""Norm targets: a name -> factory table that :func:`swap_norms` looks a target spec up in.

A target is named by a spec ``NAME[:ARG][+bias][+skipinit]`` (:func:`parse_target`), or given as a
factory, as timm's ``get_norm_layer`` takes one: a module class or a ``functools.partial`` called with
the layer's channel count (``partial(nn.GroupNorm, 4)``).  :func:`register_target` adds a name to the
table, so that a study's ``variants`` and the CLI can use it.  The built-in names
(:func:`list_targets`):

``identity``
    No normalisation (:class:`IdentityNorm`, an ``nn.Identity`` that hands on a copy of its input, as
    BatchNorm did).  It has no affine parameters, so a BatchNorm's zero weight is lost with the rest
    (the report says so).
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
    record says why.  Both carry the BatchNorm's weight and bias in the affine they compute (a zero
    weight gives a zero ``scale``, or a zero folded conv weight).

``groupnorm``, ``layernorm``, ``instancenorm`` and every registered or given factory start from the
BatchNorm's weight and bias as the swap finds them (:func:`bnprobe.surgery._affine.take_over`): a weight
timm's ``zero_init_last`` set to 0 stays 0, as in timm's own GroupNorm ResNet.  Where the new norm's
``weight``/``bias`` is missing or not one value per channel, the record says it was not kept.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.surgery._batchnorm import eval_affine, num_channels, own_params
from bnprobe.surgery._norms import ChannelAffine, ChannelLayerNorm, IdentityNorm, InstanceNorm


def _identity(bn: nn.Module, arg: int | None) -> nn.Module:
    return IdentityNorm()


def _groupnorm(bn: nn.Module, arg: int | None) -> nn.Module:
    channels = num_channels(bn)
    groups = math.gcd(32, channels) if arg is None else arg
    if channels % groups:
        raise BnprobeError(f"groupnorm:{groups} needs a channel count divisible by {groups}, but this layer "
                           f"has {channels} channels; pick a G that divides every layer's channels")
    return nn.GroupNorm(groups, channels, eps=bn.eps)


def _layernorm(bn: nn.Module, arg: int | None) -> nn.Module:
    return ChannelLayerNorm(num_channels(bn), eps=bn.eps)


def _instancenorm(bn: nn.Module, arg: int | None) -> nn.Module:
    return InstanceNorm(num_channels(bn), eps=bn.eps)


def _frozen(bn: nn.Module, arg: int | None) -> nn.Module:
    scale, shift = eval_affine(bn)
    return ChannelAffine(scale, shift, trainable=own_params(bn) > 0)


NormBuilder = Callable[[nn.Module, int | None], nn.Module]
"""The replacement for one BatchNorm, given that BatchNorm and the spec's ``:ARG`` (None when not given)."""


AffineMode = Literal["copy", "derived", "none"]


@dataclass(frozen=True)
class Target:
    """One entry of the target table: how to build a replacement, and how it gets the BatchNorm's affine."""

    build: NormBuilder
    """Replacement norm for one BatchNorm, given the spec's ``:ARG`` (None when not given)."""
    takes_arg: bool = False
    affine: AffineMode = "copy"
    """``copy``: the swap copies the BatchNorm's weight and bias into the norm's own; ``derived``: ``build``
    computes the norm from them; ``none``: the norm has no affine parameters."""


TARGETS: dict[str, Target] = {
    "identity": Target(_identity, affine="none"),
    "groupnorm": Target(_groupnorm, takes_arg=True),
    "layernorm": Target(_layernorm),
    "instancenorm": Target(_instancenorm),
    "frozen": Target(_frozen, affine="derived"),
    # fold's entry builds the layers that cannot fold; folding itself needs the graph (fold_plan)
    "fold": Target(_frozen, affine="derived"),
}

_OPTIONS = ("bias", "skipinit")

BIAS_TARGETS = ("identity",)
"""Targets ``+bias`` applies to: those that leave no per-channel shift of their own."""


NormFactory = Callable[[int], nn.Module]
"""Builds the norm that replaces one BatchNorm from its channel count (a module class, a partial, a function)."""

_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def target_label(factory: NormFactory) -> str:
    """What a target given as a factory is called in reports: ``GroupNorm``, ``GroupNorm(4)``, ``my_norm``."""
    if isinstance(factory, functools.partial):
        args = [repr(a) for a in factory.args] + [f"{k}={v!r}" for k, v in factory.keywords.items()]
        return f"{target_label(factory.func)}({', '.join(args)})"
    return getattr(factory, "__name__", type(factory).__name__)


def _from_factory(factory: NormFactory, label: str) -> NormBuilder:
    def build(bn: nn.Module, arg: int | None) -> nn.Module:
        channels = num_channels(bn)
        try:
            norm = factory(channels)
        except TypeError as exc:
            raise BnprobeError(f"target {label}: calling it with the channel count ({channels}) failed ({exc}); a "
                               "target is called with the channel count alone: use functools.partial for the rest, "
                               "e.g. partial(nn.GroupNorm, 4)") from None
        if not isinstance(norm, nn.Module):
            raise BnprobeError(f"target {label}: gave {type(norm).__name__}, not an nn.Module")
        return norm
    return build


def register_target(name: str, factory: NormFactory | None = None) -> Callable[..., nn.Module]:
    """Add the norm target ``name``, built by ``factory(num_channels)``; usable as a decorator too.

    After ``register_target("rmsnorm", partial(MyRMSNorm, eps=1e-6))``, ``"rmsnorm"`` (and
    ``"rmsnorm+skipinit"``) works wherever a target name does: :func:`swap_norms`, :func:`make_variant`,
    :attr:`bnprobe.StudyConfig.variants`.  Names are lower case; a built-in or taken name is refused.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BnprobeError(f"target name {name!r}: use lower-case letters, digits, '-' and '_', starting with a letter "
                           "(':' and '+' belong to the spec syntax)")
    if name in TARGETS or name == REFERENCE_VARIANT:
        raise BnprobeError(f"a norm target named {name!r} is already registered; pick another name")

    def add(factory: NormFactory) -> NormFactory:
        if not callable(factory):
            raise BnprobeError(f"target {name}: the factory must be a module class or a callable, got {factory!r}")
        TARGETS[name] = Target(_from_factory(factory, name))
        return factory

    return add if factory is None else add(factory)


def resolve_target(target: str | NormFactory) -> tuple[TargetSpec, Target]:
    """The spec of ``target`` (a spec string or a factory) and its table entry (a factory's is made here)."""
    if isinstance(target, str):
        spec = parse_target(target)
        return spec, TARGETS[spec.name]
    if not callable(target):
        raise BnprobeError(f"norm target {target!r}: give a name ({', '.join(list_targets())}), a module class or a "
                           "factory such as functools.partial(nn.GroupNorm, 4)")
    label = target_label(target)
    return TargetSpec(name=label), Target(_from_factory(target, label))


def list_targets() -> list[str]:
    """Names of the norm targets :func:`swap_norms` accepts (not counting ``:ARG``/``+bias``/``+skipinit``),
    the registered ones included."""
    return list(TARGETS)


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
    if name not in TARGETS:
        raise UnknownNameError(f"unknown norm target {name!r}; available: {', '.join(list_targets())}")
    options = [o.strip() for o in options]
    bad = [o for o in options if o not in _OPTIONS]
    if bad:
        raise BnprobeError(f"target {spec!r}: unknown option {bad[0]!r}; options: {', '.join(_OPTIONS)}")
    if "bias" in options and name not in BIAS_TARGETS:
        raise BnprobeError(f"target {spec!r}: +bias applies to {', '.join(BIAS_TARGETS)} only; {name} keeps a "
                           "per-channel shift of its own")
    arg = None
    if sep:
        if not TARGETS[name].takes_arg:
            raise BnprobeError(f"target {name} takes no ':' argument, got {spec!r}")
        try:
            arg = int(raw_arg)
        except ValueError:
            arg = 0
        if arg < 1:
            raise BnprobeError(f"target {spec!r}: {name}:G needs a positive integer G, got {raw_arg!r}")
    return TargetSpec(name=name, arg=arg, skipinit="skipinit" in options, bias="bias" in options)
