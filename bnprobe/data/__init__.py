"""Data: the dataset registry, the built-in readers (digits, MNIST, Fashion-MNIST, CIFAR-10, image
folders), the user's own loaders (:meth:`Dataset.from_loaders`) and training-time augmentation.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.data._augment": ["Augment"],
    "bnprobe.data._loaders": [
        "Dataset", "Split", "adapt_channels", "inputs_and_labels", "list_datasets", "load_dataset",
        "permuted_subset", "register_dataset",
    ],
})
