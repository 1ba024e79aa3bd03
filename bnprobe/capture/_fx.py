"""Functional activations -- ``F.relu(x)``, ``torch.relu(x)``, ``x.relu()`` in a ``forward`` -- made hookable.

Capture's forward hooks see modules only, and an activation written as a call has no module to hook.
:func:`plan_functional` deals with them in three steps:

1. **Find.**  One eager forward pass on one sample, under a :class:`~torch.overrides.TorchFunctionMode`,
   notes every call :func:`bnprobe.capture.functional_activation` recognises together with the
   innermost module whose ``forward`` made it (its *host*).  Calls made inside activation modules
   (``nn.ReLU`` calls ``F.relu``), inside ``torch.nn``'s own modules and inside the modules capture
   hooks anyway are how those modules work, not layers of their own, and are skipped.  This pass
   works on any model, so capture knows exactly what it would miss.
2. **Trace.**  torch.fx traces the model, keeping as a leaf every module except the hosts and their
   ancestors: the rest of the model runs as it is (its own ``forward``, its hooks), and the hosts
   are named by their module paths.  After each activation node an ``nn.Identity`` of its own is
   inserted; capture hooks it like any module, so the activation is copied before any later
   operation can change it in place.
3. **Check.**  The traced module must make the same activation calls, in the same order, and give
   the same output as the model on that sample; otherwise it is not used.

A model without functional activations is never traced (plain module hooks are faster and work on
any model).  When tracing or the check fails, capture falls back to module hooks and names the
activations it could not see.

Names: ``HOST:FN`` -- ``layer1.0:relu`` is the ``relu`` call in ``layer1.0``'s forward, ``:gelu`` a
``gelu`` call in the model's own forward; ``FN`` is the activation's name without the in-place ``_``
(``F.relu``, ``torch.relu_`` and ``x.relu()`` are all ``relu``).  Capture appends ``#k`` per call
when one forward makes the same call several times, exactly as for a module called several times.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from bnprobe._common import describe
from bnprobe.capture._layer_kinds import functional_activation, is_activation

_RECORDER_PREFIX = "_bnprobe_functional_"


@dataclass
class FunctionalPlan:
    """How capture runs the model so that its functional activations can be hooked."""

    forward: Callable[..., Any]
    """The model itself, or the traced module with an ``nn.Identity`` after each activation."""
    recorders: list[tuple[str, nn.Module]] = field(default_factory=list)
    """``(HOST:FN, identity)`` for each functional activation to hook, in graph order."""
    unseen: list[str] = field(default_factory=list)
    """``HOST:FN`` of each functional activation call that cannot be captured, in call order."""
    problem: str = ""
    """Why ``unseen`` could not be captured."""


def functional_name(host: str, fn: str) -> str:
    """The layer name of activation ``fn`` called in the forward of the module at path ``host``."""
    return f"{host}:{fn}"


def functional_fn(name: str) -> str:
    """The activation a functional layer calls: ``FN`` of its name ``HOST:FN`` (:func:`functional_name`)."""
    return name.rpartition(":")[2]


def plan_functional(model: nn.Module, sample: torch.Tensor, *, hooked: Collection[nn.Module],
                    wanted: Callable[[str], bool]) -> FunctionalPlan:
    """Find the functional activations of ``model`` that ``wanted`` selects, and make them hookable.

    ``sample`` is one input batch on the model's device; ``hooked`` are the modules capture hooks
    anyway (calls inside them belong to their output).  The model must already be in the mode it is
    captured in (eval): traced code keeps the ``self.training`` branches it took.
    """
    hooked = set(hooked)
    calls, expected = _find_calls(model, sample, hooked)
    calls = [c for c in calls if wanted(functional_name(*c))]
    if not calls:
        return FunctionalPlan(model)
    names = [functional_name(*c) for c in calls]
    try:
        traced, recorders = _instrument(model, {host for host, _ in calls}, hooked, wanted)
    except Exception as exc:  # tracing runs user code and may fail in any way; the fallback is hooks
        return FunctionalPlan(model, unseen=names, problem=f"model does not trace with torch.fx ({describe(exc)})")
    problem = _disagreement(traced, [name for name, _ in recorders], names, sample, expected)
    if problem:
        return FunctionalPlan(model, unseen=names, problem=problem)
    return FunctionalPlan(traced, recorders)


def _disagreement(traced: fx.GraphModule, traced_names: list[str], names: list[str], sample: torch.Tensor,
                  expected: Any) -> str:
    """Why the traced module cannot stand in for the model on ``sample``, or ``""`` when it can."""
    if traced_names != names:
        return "the torch.fx trace makes other activation calls than the model's forward"
    try:
        output = traced(sample)
    except Exception as exc:  # the traced code runs user code too
        return f"the torch.fx trace of the model fails ({describe(exc)})"
    return "" if _same_tensors(expected, output) else "the torch.fx trace of the model gives other outputs"


def _is_module_internal(module: nn.Module, hooked: set[nn.Module]) -> bool:
    """Whether activation calls in ``module``'s own forward are part of its output, not layers."""
    return module in hooked or is_activation(module) or type(module).__module__.startswith("torch.nn.")


def _find_calls(model: nn.Module, sample: torch.Tensor,
                hooked: set[nn.Module]) -> tuple[list[tuple[str, str]], Any]:
    """``(host path, activation)`` of each functional activation call in one forward, and its output."""
    paths = {module: path for path, module in model.named_modules()}
    stack: list[nn.Module] = []
    calls: list[tuple[str, str]] = []

    class _Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = functional_activation(func)
            if name is not None and stack and not _is_module_internal(stack[-1], hooked):
                calls.append((paths[stack[-1]], name))
            return func(*args, **(kwargs or {}))

    def enter(module: nn.Module, _args: Any) -> None:
        stack.append(module)

    def leave(_module: nn.Module, _args: Any, _output: Any) -> None:  # returns None: the output stays
        stack.pop()

    handles = [m.register_forward_pre_hook(enter) for m in paths] + [m.register_forward_hook(leave) for m in paths]
    try:
        with _Spy():
            output = model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


class _HostTracer(fx.Tracer):
    """Traces only through ``traced`` modules; every other module stays one ``call_module`` node."""

    def __init__(self, traced: set[nn.Module]) -> None:
        super().__init__()
        self.traced = traced

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m not in self.traced


def _instrument(model: nn.Module, hosts: set[str], hooked: set[nn.Module],
                wanted: Callable[[str], bool]) -> tuple[fx.GraphModule, list[tuple[str, nn.Module]]]:
    """Trace through ``hosts`` and put an ``nn.Identity`` after each wanted activation node."""
    traced_modules = {model}
    for host in hosts:
        parts = host.split(".") if host else []
        traced_modules.update(model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts) + 1))
    graph = _HostTracer(traced_modules).trace(model)
    module = fx.GraphModule(model, graph, class_name=type(model).__name__)
    recorders: list[tuple[str, nn.Module]] = []
    for node in list(module.graph.nodes):
        name = _activation_of(node, model, hooked)
        if name is None or not wanted(name):
            continue
        target = f"{_RECORDER_PREFIX}{len(recorders)}"
        recorder = nn.Identity()
        module.add_submodule(target, recorder)
        with module.graph.inserting_after(node):
            module.graph.call_module(target, (node,))
        recorders.append((name, recorder))
    module.recompile()
    return module, recorders


def _activation_of(node: fx.Node, model: nn.Module, hooked: set[nn.Module]) -> str | None:
    """``HOST:FN`` when ``node`` is a functional activation call that is a layer of its own."""
    if node.op == "call_function":
        fn = functional_activation(node.target)
    elif node.op == "call_method":
        fn = functional_activation(getattr(torch.Tensor, node.target, None))
    else:
        return None
    if fn is None:
        return None
    stack = node.meta.get("nn_module_stack") or {}
    host = next(reversed(stack.values()))[0] if stack else ""
    if _is_module_internal(model.get_submodule(host), hooked):
        return None
    return functional_name(host, fn)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) model output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _same_tensors(expected: Any, actual: Any) -> bool:
    """Whether two model outputs hold the same tensors, up to float rounding."""
    left, right = _tensors(expected), _tensors(actual)
    return len(left) == len(right) and all(
        a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5, equal_nan=True)
        for a, b in zip(left, right, strict=True))
