"""What a probe writer imports: the protocol (:class:`Probe`, :class:`StreamingProbe`, :class:`ProbeContext`),
the data capture hands a probe (:class:`LayerData`, :class:`Accumulator`), the registry
(:func:`register_probe`) and the constants a probe compares with (:data:`REFERENCE_VARIANT`,
:data:`MODEL_SCOPE_LAYER`).  The same names are exported by :mod:`bnprobe.probes`; they are defined in
its private modules ``_protocol``, ``_registry`` and ``_spec``.
"""

from bnprobe._common import MODEL_SCOPE_LAYER, REFERENCE_VARIANT
from bnprobe.capture._layer_data import Accumulator, LayerData
from bnprobe.probes._protocol import Need, Probe, ProbeContext, Scope, StreamingProbe
from bnprobe.probes._registry import ProbeInfo, get_probe, list_probes, probe_names, register_probe
from bnprobe.probes._spec import build_probes, parse_probe_spec, split_probe_list

__all__ = [
    "MODEL_SCOPE_LAYER",
    "REFERENCE_VARIANT",
    "Accumulator",
    "LayerData",
    "Need",
    "Probe",
    "ProbeContext",
    "ProbeInfo",
    "Scope",
    "StreamingProbe",
    "build_probes",
    "get_probe",
    "list_probes",
    "parse_probe_spec",
    "probe_names",
    "register_probe",
    "split_probe_list",
]
