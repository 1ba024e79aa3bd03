"""Capture: which layers a study reads (layer kinds, globs), the forward hooks or fx path that read
their activations, and the bounded store the activations stream into.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.capture._capture": [
        "DEFAULT_MAX_DEVICE_MEMORY", "DEFAULT_MAX_MEMORY", "CaptureResult", "CaptureWarning", "capture",
        "check_max_device_memory", "check_spatial", "plan_placement",
    ],
    "bnprobe.capture._layer_data": ["Accumulator", "LayerData"],
    "bnprobe.capture._layer_kinds": ["activation_name", "functional_activation"],
})
