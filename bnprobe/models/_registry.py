"""bnprobe's own models by name: :func:`register_model` and :func:`list_models`, as in timm's registry.

The built-ins (``cnn4``, ``vgg16_cifar``: :mod:`bnprobe.models._cnn`) register the first time the
registry is asked, so that importing the models stage builds nothing it does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from fnmatch import fnmatch

from torch import nn

ModelFn = Callable[..., nn.Module]
_BUILTINS: dict[str, ModelFn] = {}


def builtins() -> dict[str, ModelFn]:
    """The registry, bnprobe's own models in it."""
    importlib.import_module("bnprobe.models._cnn")
    return _BUILTINS


def register_model(fn: ModelFn) -> ModelFn:
    """Decorator: register ``fn(num_classes=..., in_chans=..., **kwargs)`` under its function name."""
    builtins()[fn.__name__] = fn  # the built-ins first, so that a name of the user's replaces theirs
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """bnprobe's built-in model names matching the wildcard ``pattern``."""
    return sorted(n for n in builtins() if fnmatch(n, pattern))
