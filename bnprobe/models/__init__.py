"""Models: the registry and factory for bnprobe's own CNNs beside timm's and torchvision's, and the
user's starting weights (``init_weights``) read into them.

* ``_registry`` -- :func:`register_model`, :func:`list_models`;
* ``_factory`` -- :func:`create_model`: bnprobe's, ``tv:`` torchvision's, or timm's, from scratch or pretrained;
* ``_pretrained`` -- published weights found in the local caches (never downloaded) or a file;
* ``_cnn`` -- ``cnn4`` and ``vgg16_cifar``;
* ``_weights`` -- :func:`load_checkpoint` and the errors of reading a torch file.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe._common": ["HEADS"],
    "bnprobe.models._cnn": ["PlainCNN"],
    "bnprobe.models._factory": ["create_model", "input_channels"],
    "bnprobe.models._pretrained": ["classifier_name"],
    "bnprobe.models._registry": ["list_models", "register_model"],
    "bnprobe.models._weights": ["load_checkpoint", "load_state", "read_torch_file"],
})
