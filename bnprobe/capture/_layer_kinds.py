"""Which modules and which function calls count as activations.

Capture, surgery and their tests all need the same answer to "is this module an activation?", so it
lives here once.  timm's norm-act layers keep their activation as an ordinary child module (``.act``),
so it is found by the same test.  Activations written as function calls inside a ``forward``
(``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``) are recognised by :func:`functional_activation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

_TORCH_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu", nn.RReLU: "rrelu",
    nn.ELU: "elu", nn.CELU: "celu", nn.SELU: "selu", nn.GELU: "gelu", nn.SiLU: "silu", nn.Mish: "mish",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Hardtanh: "hardtanh", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Softplus: "softplus",
}
_TIMM_NAMES = {"Swish": "silu", "Mish": "mish", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid",
               "HardMish": "hard_mish", "GELU": "gelu", "GELUTanh": "gelu", "QuickGELU": "quick_gelu",
               "Sigmoid": "sigmoid", "Tanh": "tanh", "PReLU": "prelu"}
"""timm's activation classes (``timm.layers.activations``) and the functions they compute."""
_TIMM_ME_NAMES = {"SwishMe": "silu", "MishMe": "mish", "HardSwishMe": "hardswish", "HardSigmoidMe": "hardsigmoid",
                  "HardMishMe": "hard_mish"}
"""timm's memory-efficient versions of them (``timm.layers.activations_me``): the same functions."""


def _timm_activation_names() -> dict[type[nn.Module], str]:
    try:
        from timm.layers import activations as timm_act
        from timm.layers import activations_me as timm_act_me
    except ImportError:  # pragma: no cover - timm is a hard dependency, but stay usable without it
        return {}
    return {getattr(module, n): name for module, names in ((timm_act, _TIMM_NAMES), (timm_act_me, _TIMM_ME_NAMES))
            for n, name in names.items() if isinstance(getattr(module, n, None), type)}


_MODULE_NAMES = {**_TORCH_NAMES, **_timm_activation_names()}
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = tuple(_MODULE_NAMES)
"""Every activation module class: torch's element-wise activations and timm's."""


def activation_name(module: nn.Module) -> str | None:
    """The function an activation module computes, named as :func:`functional_activation` names calls
    (``"relu"`` for ``nn.ReLU``, ``"silu"`` for ``nn.SiLU`` and timm's ``Swish``); None for any other module.

    A subclass is named after the nearest class it derives from (``nn.ReLU6`` is ``relu6``, not its
    base ``hardtanh``), so a user's ``class MyReLU(nn.ReLU)`` is ``relu``.
    """
    return next((_MODULE_NAMES[cls] for cls in type(module).__mro__ if cls in _MODULE_NAMES), None)


#: Activations that squeeze-excite blocks use as channel gates; their outputs are weights, not
#: representations, so capture leaves them out of the default ``act`` selection.
GATE_TYPES: tuple[type[nn.Module], ...] = tuple(
    t for t in ACTIVATION_TYPES if t.__name__ in ("Sigmoid", "Hardsigmoid", "HardSigmoid", "HardSigmoidMe", "Tanh")
)


def is_activation(module: nn.Module) -> bool:
    """True for element-wise activation modules (ReLU family, SiLU, GELU, timm's activations)."""
    return isinstance(module, ACTIVATION_TYPES)


def is_gate(module: nn.Module) -> bool:
    """True for sigmoid-like activations, which usually gate channels rather than represent."""
    return isinstance(module, GATE_TYPES)


#: Element-wise activations written as calls: each name is looked up as a function in
#: ``torch.nn.functional`` and ``torch`` and as a ``Tensor`` method, with and without the in-place
#: ``_`` suffix.  The gates (``sigmoid``, ``hardsigmoid``, ``tanh``) are left out, as for modules.
FUNCTIONAL_ACTIVATION_NAMES: tuple[str, ...] = (
    "relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "celu", "selu", "gelu", "silu", "mish",
    "hardswish", "hardtanh", "softplus",
)


def _functional_table() -> dict[Callable[..., Any], str]:
    table: dict[Callable[..., Any], str] = {}
    for name in FUNCTIONAL_ACTIVATION_NAMES:
        for spelling in (name, f"{name}_"):
            for namespace in (F, torch, torch.Tensor):
                fn = getattr(namespace, spelling, None)
                if callable(fn):
                    table[fn] = name
    return table


_FUNCTIONAL = _functional_table()


def functional_activation(fn: Any) -> str | None:
    """The activation's name (``"relu"`` for ``F.relu``, ``torch.relu_`` or ``Tensor.relu``), or None.

    ``fn`` is what a call dispatches on: a function, or a ``Tensor`` method such as ``torch.Tensor.relu``.
    """
    try:
        return _FUNCTIONAL.get(fn)
    except TypeError:  # an unhashable callable is no activation
        return None


def activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every activation module in ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if name and is_activation(m)]


def count_activation_calls(model: nn.Module, *inputs) -> int:
    """Run one forward pass and count how many times activation modules were called.

    Used to prove that a norm swap kept every activation (timm's ``BatchNormAct2d`` hides one).
    """
    import torch

    calls = 0

    def hook(_module, _inp, _out):
        nonlocal calls
        calls += 1

    handles = [m.register_forward_hook(hook) for _, m in activation_modules(model)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls
