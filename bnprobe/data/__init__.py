"""Data: the dataset registry, the built-in readers (digits, MNIST, Fashion-MNIST, CIFAR-10, image
folders), the user's own loaders (:meth:`Dataset.from_loaders`) and training-time augmentation.
"""

from bnprobe.data import _readers  # noqa: F401  (registers mnist, fashion-mnist, cifar10, folder:)
from bnprobe.data._augment import Augment
from bnprobe.data._loaders import (
    Dataset,
    Split,
    adapt_channels,
    inputs_and_labels,
    list_datasets,
    load_dataset,
    permuted_subset,
    register_dataset,
)

__all__ = [
    "adapt_channels",
    "inputs_and_labels",
    "list_datasets",
    "load_dataset",
    "permuted_subset",
    "register_dataset",
    "Augment",
    "Dataset",
    "Split",
]
