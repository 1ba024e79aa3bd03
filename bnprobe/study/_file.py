"""Study files: the options of ``bnprobe run`` written down in TOML or YAML.

A study file holds the same settings as the command line, under the option names (``batch-size`` or
``batch_size``), so a study can be kept with the paper that uses it and run again as it was::

    model = "resnet18"
    dataset = "digits"
    variants = ["bn", "identity", "groupnorm:8"]
    seeds = 4
    lr = { bn = 3e-3, identity = 5e-4 }     # per-variant values, as --lr bn=3e-3,identity=5e-4

    [probes.hdbscan]                         # probes with their parameters
    min_cluster_size = 20
    dims = 30
    [probes.sparsity]

Lists become comma lists, ``probes`` tables become ``name(param=value, ...)`` specs, and per-variant
tables become ``variant=value`` lists.  Flags are booleans (``overwrite = true`` replaces the study in
``out``; ``--no-overwrite`` on the command line undoes it).  Options given on the command line win
over the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bnprobe._common import first_line
from bnprobe.errors import BnprobeError


def read_study_file(path: str | Path, options: Iterable[str] | Mapping[str, str]) -> dict[str, Any]:
    """The settings in ``path`` as ``{parameter: command-line value}``.

    ``options`` maps each setting's name (the option's, ``compile`` for ``--compile``) to the name of
    the parameter it fills (``compile_``); a plain list of names means each fills its namesake.
    """
    data = _load(Path(path))
    known = dict(options) if isinstance(options, Mapping) else {name: name for name in options}
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise BnprobeError(f"study file {path}: unknown setting {key!r}; settings are the options of "
                               f"`bnprobe run`: {', '.join(sorted(n.replace('_', '-') for n in known))}")
        settings[known[name]] = _probes(value) if name == "probes" else _plain(value)
    return settings


def _load(path: Path) -> dict:
    if not path.is_file():
        raise BnprobeError(f"study file {path} not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise BnprobeError(f"study file {path}: name it .toml, .yaml or .yml")
    except BnprobeError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError: both say where
        raise BnprobeError(f"study file {path} cannot be read: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise BnprobeError(f"study file {path} must hold settings (key = value), not a {type(data).__name__}")
    return data


def _plain(value: Any) -> Any:
    """Lists -> ``a,b``; ``{variant: value}`` -> ``variant=value,...``; scalars as they are."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={'none' if v is None else v}" for k, v in value.items())
    return value


def _probes(value: Any) -> str:
    """A probe list from a string, a list of specs, or a table ``{name: {param: value}}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(_spec(v) if isinstance(v, dict) else str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(_spec({"name": name, **(params or {})}) for name, params in value.items())
    raise BnprobeError(f"probes must be a string, a list or a table, got {value!r}")


def _spec(table: dict) -> str:
    params = {k: v for k, v in table.items() if k != "name"}
    if "name" not in table:
        raise BnprobeError(f"probe entry {table!r} has no name")
    if not params:
        return str(table["name"])
    return f"{table['name']}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
