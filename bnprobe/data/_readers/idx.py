"""``mnist`` and ``fashion-mnist`` from the original idx files, gzipped or not.

The four files -- ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each possibly with ``.gz`` -- are looked for, all four in one folder:

* with ``--data-root ROOT``: in ``ROOT``, ``ROOT/raw``, and torchvision's ``ROOT/MNIST/raw`` or
  ``ROOT/FashionMNIST/raw``;
* without: in ``/usr/share/datasets/<name>`` (where Debian's ``dataset-fashion-mnist`` package puts
  them) and in torchvision's layout under :func:`bnprobe.data._loaders.cache_root`.

When no folder has them, torchvision downloads them (``torchvision.datasets.MNIST(root, download=True)``)
into ``ROOT`` or the cache.  The official 60,000 / 10,000 train/test split is kept; images stay 28x28.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from bnprobe.data._loaders import Dataset, cache_root, from_pixels, register_dataset
from bnprobe.data._readers.files import locate
from bnprobe.errors import BnprobeError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_ROOT = Path("/usr/share/datasets")


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array in an idx file (``.gz`` read through gzip): magic ``0 0 8 ndim``, big-endian sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise BnprobeError(f"cannot read {path}: {exc}; replace it with the original idx file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise BnprobeError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise BnprobeError(f"{path} is truncated: its header promises {shape} bytes of data, "
                           f"it holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _load(name: str, torchvision_class: str, flip: bool, data_root: str | Path | None,
          image_size: int | None) -> Dataset:
    import torchvision

    def folders(root: Path | None) -> list[Path]:
        if root is not None:
            return [root, root / "raw", root / torchvision_class / "raw"]
        return [DEBIAN_ROOT / name, cache_root() / torchvision_class / "raw"]

    def download(root: Path) -> None:
        getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)

    files = locate(name, [(f, f + ".gz") for f in IDX_FILES], folders, data_root, download)
    arrays = [read_idx(files[f]) for f in IDX_FILES]
    for images, labels, split in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "t10k")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise BnprobeError(f"{name}: {split} images {images.shape} and labels {labels.shape} do not match; "
                               "check the idx files")
    train_x, train_y, test_x, test_y = (torch.from_numpy(a.copy()) for a in arrays)
    return from_pixels(name, (train_x.unsqueeze(1), train_y), (test_x.unsqueeze(1), test_y), num_classes=10,
                       image_size=image_size, augment_flip=flip,
                       info={"source": str(files[IDX_FILES[0]].parent), "split": "official train/t10k"})


@register_dataset("mnist")
def load_mnist(data_root: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """MNIST's 70,000 28x28 handwritten digits; augmentation crops but never flips."""
    return _load("mnist", "MNIST", False, data_root, image_size)


@register_dataset("fashion-mnist")
def load_fashion_mnist(data_root: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """Zalando's 70,000 28x28 clothing images in 10 classes; augmentation crops and flips."""
    return _load("fashion-mnist", "FashionMNIST", True, data_root, image_size)
