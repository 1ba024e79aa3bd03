"""Packages that import what they export on first use (PEP 562), as scientific Python's lazy_loader does.

``import bnprobe`` or ``import bnprobe.cli`` then costs what the caller uses: ``bnprobe --help`` reads
no torch, while ``bnprobe.run_study`` imports the study stage the first time it is looked up.  Each
package's ``__init__`` lists its exports once, as ``{defining module: [names]}``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over its subpackages of the same name.

    Importing ``bnprobe.capture`` (the stage) would otherwise file the subpackage as the attribute
    ``bnprobe.capture`` over the function of that name that ``bnprobe`` exports.
    """

    _lazy_exports: dict[str, str]

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_exports", {}):
            return  # the import system filing a subpackage under an exported name: keep the export
        super().__setattr__(name, value)


def attach(package: str, exports: dict[str, list[str]]) -> tuple[Callable[[str], object], Callable[[], list[str]],
                                                                  list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, which exports ``exports``' names."""
    where = {name: module for module, names in exports.items() for name in names}
    module = sys.modules[package]
    module._lazy_exports = where
    module.__class__ = _LazyPackage

    def __getattr__(name: str) -> object:
        try:
            source = where[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(source), name)
        module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*module.__dict__, *where})

    return __getattr__, __dir__, sorted(where)
