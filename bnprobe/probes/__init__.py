"""Representation probes: the protocol, the registry and the built-in families."""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.probes.base": [
        "Accumulator", "LayerData", "Probe", "ProbeContext", "ProbeInfo", "StreamingProbe", "build_probes",
        "get_probe", "list_probes", "parse_probe_spec", "probe_names", "register_probe",
    ],
})
