"""The probe registry: :func:`register_probe` for built-ins and in-tree probes, and the ``bnprobe.probes``
entry-point group for plugins (ordinary installed packages, imported only when the registry is first asked)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, get_args

from bnprobe._common import MODEL_SCOPE_LAYER as MODEL_SCOPE_LAYER  # re-exported: plugins and probes read it here
from bnprobe.errors import BnprobeError, UnknownNameError

if TYPE_CHECKING:
    pass

from bnprobe.probes._protocol import Need, Probe, Scope

ENTRY_POINT_GROUP = "bnprobe.probes"


@dataclass(frozen=True)
class ProbeInfo:
    """One registry entry: the class and where it came from."""

    name: str
    cls: type[Probe] | None
    source: str
    """``"built-in"`` or the distribution that provides the entry point."""
    error: str | None = None
    """Why a plugin could not be loaded (then ``cls`` is None)."""

    @property
    def broken(self) -> bool:
        return self.cls is None


_REGISTRY: dict[str, ProbeInfo] = {}
_PLUGINS_LOADED = False


def register_probe(name: str, *, source: str | None = None) -> Callable[[type[Probe]], type[Probe]]:
    """Class decorator: make a :class:`Probe` subclass available as ``name``.

    ``source`` is what ``bnprobe probes`` lists as its origin: ``built-in`` for bnprobe's own, else
    the class's module (``__main__`` in a notebook).  Registering a name that another class holds
    -- a built-in's, a plugin's -- replaces it with a warning, as timm's ``register_model`` does
    (the built-ins and plugins are loaded first, so yours wins); re-running the cell that defines the
    same class does not warn.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name):
        raise ValueError(f"probe name {name!r} must be an identifier (letters, digits, _ or -)")

    def decorate(cls: type[Probe]) -> type[Probe]:
        if not (isinstance(cls, type) and issubclass(cls, Probe)):
            raise TypeError(f"@register_probe({name!r}) needs a Probe subclass, got {cls!r}")
        for attribute, allowed in (("needs", get_args(Need)), ("scope", get_args(Scope))):
            if getattr(cls, attribute) not in allowed:
                raise TypeError(f"probe {name!r}: {attribute} must be one of {', '.join(allowed)}, "
                                f"got {getattr(cls, attribute)!r}")
        if not cls.__module__.startswith("bnprobe."):
            _load_plugins()  # so the user's class replaces a built-in or plugin, not the other way round
        old = _REGISTRY.get(name)
        if old is not None and old.cls is not None and _qualified(old.cls) != _qualified(cls):
            warnings.warn(f"probe {name!r} ({_qualified(old.cls)}) is replaced by {_qualified(cls)}",
                          stacklevel=2)
        cls.name = name
        origin = source or ("built-in" if cls.__module__.startswith("bnprobe.") else cls.__module__)
        _REGISTRY[name] = ProbeInfo(name=name, cls=cls, source=origin)
        return cls

    return decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_BUILTIN_MODULES = ("bnprobe.probes._sparsity", "bnprobe.probes._clustering", "bnprobe.probes._attribution",
                    "bnprobe.probes._linear", "bnprobe.probes._selectivity", "bnprobe.probes._rank",
                    "bnprobe.probes._separability", "bnprobe.probes._procrustes", "bnprobe.probes._ablation")


def _load_builtins() -> None:
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    _load_builtins()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or ep.value.split(":")[0]
        if ep.name in _REGISTRY and _REGISTRY[ep.name].source == "built-in":
            continue
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Probe)):
                raise TypeError(f"{ep.value} is not a bnprobe Probe subclass")
            register_probe(ep.name, source=dist)(cls)  # the decorator's checks, for plugins too
        except Exception as exc:  # a broken plugin must not break bnprobe
            _REGISTRY[ep.name] = ProbeInfo(ep.name, None, dist, f"{type(exc).__name__}: {exc}")


def list_probes(include_broken: bool = False) -> list[ProbeInfo]:
    """Every registered probe (built-ins and plugins), sorted by name."""
    _load_plugins()
    return [info for _, info in sorted(_REGISTRY.items()) if include_broken or not info.broken]


def probe_names() -> list[str]:
    """Names of the probes that can be built."""
    return [info.name for info in list_probes()]


def get_probe(name: str, **params: Any) -> Probe:
    """Build the probe registered as ``name`` with ``params`` (validated by the probe)."""
    _load_plugins()
    info = _REGISTRY.get(name)
    if info is None:
        raise UnknownNameError(f"unknown probe {name!r}; available: {', '.join(probe_names())}")
    if info.broken:
        raise BnprobeError(f"probe {name!r} from {info.source} failed to load ({info.error}); "
                           "reinstall or fix that package")
    unknown = [k for k in params if k not in info.cls.param_names()]
    if unknown:
        raise BnprobeError(f"probe {name}: unknown parameter(s) {', '.join(unknown)}; "
                           f"it takes: {', '.join(info.cls.param_names()) or 'none'}")
    return info.cls(**params)
