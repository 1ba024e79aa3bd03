"""Capture: which layers a study reads (layer kinds, globs), the forward hooks or fx path that read
their activations, and the bounded store the activations stream into.
"""

from bnprobe.capture._capture import (
    DEFAULT_MAX_DEVICE_MEMORY,
    DEFAULT_MAX_MEMORY,
    CaptureResult,
    CaptureWarning,
    capture,
    check_max_device_memory,
    check_spatial,
    plan_placement,
)
from bnprobe.capture._layer_data import Accumulator, LayerData
from bnprobe.capture._layer_kinds import activation_name, functional_activation

__all__ = [
    "Accumulator",
    "LayerData",
    "DEFAULT_MAX_DEVICE_MEMORY",
    "DEFAULT_MAX_MEMORY",
    "activation_name",
    "capture",
    "check_max_device_memory",
    "check_spatial",
    "functional_activation",
    "plan_placement",
    "CaptureResult",
    "CaptureWarning",
]
