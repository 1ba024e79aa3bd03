"""Models: the registry and factory for bnprobe's own CNNs beside timm's and torchvision's, and the
user's starting weights (``init_weights``) read into them.
"""

from bnprobe.models._factory import HEADS, create_model, input_channels, list_models, register_model
from bnprobe.models._weights import load_checkpoint, load_state, read_torch_file

__all__ = [
    "HEADS",
    "create_model",
    "input_channels",
    "list_models",
    "load_checkpoint",
    "load_state",
    "read_torch_file",
    "register_model",
]
