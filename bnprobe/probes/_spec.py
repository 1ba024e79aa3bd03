"""Probe specs as a study and the command line give them: ``hdbscan(dims=20)``, comma lists of them, and
the probes built from them."""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING, Any

from bnprobe._common import MODEL_SCOPE_LAYER as MODEL_SCOPE_LAYER  # re-exported: plugins and probes read it here
from bnprobe.errors import BnprobeError

if TYPE_CHECKING:
    pass

from bnprobe.probes._protocol import Probe
from bnprobe.probes._registry import get_probe

_SPEC = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse_probe_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"hdbscan(min_cluster_size=20, dims=30)"`` -> ``("hdbscan", {...})``.

    Values are Python literals; the bare words ``none``, ``true`` and ``false`` are accepted too, and
    any other bare word is taken as a string.
    """
    match = _SPEC.match(spec)
    if not match:
        raise BnprobeError(f"cannot read probe spec {spec!r}; write NAME or NAME(param=value, ...)")
    name, args = match.group(1), (match.group(2) or "").strip()
    params: dict[str, Any] = {}
    if args:
        for part in _split_args(args):
            key, sep, raw = part.partition("=")
            if not sep or not key.strip().isidentifier():
                raise BnprobeError(f"probe spec {spec!r}: {part.strip()!r} is not param=value")
            params[key.strip()] = _literal(raw.strip())
    return name, params


def _split_args(args: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _literal(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def split_probe_list(text: str) -> list[str]:
    """Split ``"sparsity,hdbscan(dims=30,min_cluster_size=5)"`` at the top-level commas."""
    return [p.strip() for p in _split_args(text)]


def build_probes(specs: list[str] | list[Probe] | str) -> list[Probe]:
    """Turn spec strings (or ready probes) into probe objects; a string may hold a comma list."""
    if isinstance(specs, str):
        specs = split_probe_list(specs)
    probes: list[Probe] = []
    for spec in specs:
        if isinstance(spec, Probe):
            probes.append(spec)
            continue
        name, params = parse_probe_spec(spec)
        probes.append(get_probe(name, **params))
    keys = [p.key for p in probes]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise BnprobeError(f"probe {sorted(dupes)[0]} is listed twice; give each probe once")
    return probes
