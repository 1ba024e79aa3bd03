"""Representation probes: the protocol, the registry and the built-in families."""

from bnprobe.probes.base import (
    Accumulator,
    LayerData,
    Probe,
    ProbeContext,
    ProbeInfo,
    StreamingProbe,
    build_probes,
    get_probe,
    list_probes,
    parse_probe_spec,
    probe_names,
    register_probe,
)

__all__ = [
    "Accumulator",
    "LayerData",
    "Probe",
    "ProbeContext",
    "ProbeInfo",
    "StreamingProbe",
    "build_probes",
    "get_probe",
    "list_probes",
    "parse_probe_spec",
    "probe_names",
    "register_probe",
]
