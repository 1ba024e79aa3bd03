"""Models: the registry and factory for bnprobe's own CNNs beside timm's and torchvision's, and the
user's starting weights (``init_weights``) read into them.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe._common": ["HEADS"],
    "bnprobe.models._factory": ["create_model", "input_channels", "list_models", "register_model"],
    "bnprobe.models._weights": ["load_checkpoint", "load_state", "read_torch_file"],
})
