"""``cifar10`` from the python version of the dataset (the pickled batches torchvision also reads).

``data_batch_1`` ... ``data_batch_5`` (50,000 training images) and ``test_batch`` (10,000) are looked
for in ``--data-root ROOT`` and ``ROOT/cifar-10-batches-py`` (the folder the official archive unpacks
to), or without ``--data-root`` in the download cache; when absent, torchvision downloads and unpacks
the archive (``torchvision.datasets.CIFAR10(root, download=True)``).  Each batch is a pickled dict with
``data`` (``(10000, 3072)`` uint8, channel-major rows) and ``labels``.

The batches are unpickled with an unpickler that only builds numpy arrays: a pickle can run code, and a
file in a dataset folder deserves no such trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from bnprobe.data._loaders import Dataset, cache_root, from_pixels, register_dataset
from bnprobe.data._readers.files import locate
from bnprobe.errors import BnprobeError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FOLDER = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module == "numpy.core.multiarray":  # the Python 2 era name of the same function
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` of one CIFAR-10 python batch."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise BnprobeError(f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {exc}); "
                           "replace it with the file from the python version of the dataset") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise BnprobeError(f"CIFAR-10 batch {path} holds data of shape {data.shape} and {len(labels)} labels; "
                           "expected (N, 3072) and N")
    return data.reshape(-1, 3, 32, 32), labels


@register_dataset("cifar10")
def load_cifar10(data_root: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """CIFAR-10's 60,000 32x32 colour images in 10 classes; augmentation crops (4 px) and flips."""
    import torchvision

    def folders(root: Path | None) -> list[Path]:
        base = root if root is not None else cache_root()
        return [base, base / FOLDER]

    def download(root: Path) -> None:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)

    files = locate("cifar10", [(name,) for name in (*TRAIN_BATCHES, TEST_BATCH)], folders, data_root, download)
    train = [read_batch(files[name]) for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(files[TEST_BATCH])
    train_x = torch.from_numpy(np.concatenate([x for x, _ in train]))
    train_y = torch.from_numpy(np.concatenate([y for _, y in train]))
    return from_pixels("cifar10", (train_x, train_y), (torch.from_numpy(test_x), torch.from_numpy(test_y)),
                       num_classes=len(CLASSES), image_size=image_size, augment_flip=True,
                       info={"source": str(files[TEST_BATCH].parent), "split": "official 50,000/10,000",
                             "classes": list(CLASSES)})
