"""Datasets as in-memory tensors.

Every dataset bnprobe knows is small enough to live in memory (and on the training device) as one
float tensor of images and one tensor of labels per split, so training needs no DataLoader workers
and capture can index the probed samples directly.  Each dataset also carries the augmentation
policy that suits it (:class:`bnprobe.data.Augment`), which the trainer applies on the device.

Names (:func:`list_datasets`): ``digits`` (below), ``mnist``, ``fashion-mnist`` and ``cifar10``
(:mod:`bnprobe.data._readers`, read from their original files), and ``folder:PATH`` for an image-folder
tree.  Pixels are scaled to [0, 1] and standardised per channel with the training split's mean and
standard deviation (:func:`normalise`).

``digits`` is the embedded default: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten
digits, 17 grey levels).  bnprobe splits it once, stratified, 80 % train / 20 % test with
``random_state=0`` (1,437 / 360 images), scales pixels to [0, 1], resizes to 32x32 with bilinear
interpolation, and normalises with the training set's mean and standard deviation.  The single grey
channel is repeated when a model takes more channels (torchvision models take 3).  It has no
augmentation policy: its 8x8 digits fill their frame, so even a one-pixel shift cuts strokes off, and
the quick default study is better served by the plain images.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bnprobe.data._augment import Augment
from bnprobe.errors import BnprobeError, UnknownNameError

FOLDER_PREFIX = "folder:"


@dataclass
class Split:
    """One split: images ``(N, C, H, W)`` float32 and integer labels ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """The split on ``device`` (no copy when it is already there)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """A train and a test split plus what a model needs to know about them.

    ``augment`` is the augmentation that suits the data (None: none); a study applies it unless told
    not to.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    info: dict = field(default_factory=dict)
    augment: Augment | None = None

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    def to(self, device: torch.device | str) -> Dataset:
        """The dataset with both splits on ``device``: moved once, then sliced there by the trainer."""
        return replace(self, train=self.train.to(device), test=self.test.to(device))

    @classmethod
    def from_loaders(cls, train: Iterable, test: Iterable, *, name: str = "custom",
                     num_classes: int | None = None, augment: Augment | None = None) -> Dataset:
        """A dataset from your own ``DataLoader`` s (or any iterables of ``(inputs, labels)`` batches).

        Each loader is read once, in its own order, and held as tensors: a study trains every run on
        the same data, moves it to the device once and probes a fixed subset, which a loader that
        shuffles or augments on the fly cannot give.  Give ``augment`` for augmentation on the device.
        ``num_classes`` defaults to the largest label + 1.  For data too large to hold, train with
        :func:`bnprobe.train_model` and capture with :func:`bnprobe.capture._capture`, which read loaders
        batch by batch.
        """
        splits = [_read_loader(loader, what) for loader, what in ((train, "train"), (test, "test"))]
        if num_classes is None:
            num_classes = max(int(s.y.max()) for s in splits) + 1
        return cls(name, splits[0], splits[1], num_classes, augment=augment)


def inputs_and_labels(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(inputs, labels)`` of one loader batch: a tuple or list whose first two items are tensors."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, torch.Tensor) for t in batch[:2]):
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        kind = f"a dict with keys {', '.join(map(str, batch))}"
    elif isinstance(batch, (tuple, list)):
        kind = f"a {type(batch).__name__} of {', '.join(type(item).__name__ for item in batch[:3])}"
    else:
        kind = type(batch).__name__
    raise BnprobeError(f"a data batch must be (inputs, labels) tensors, got {kind}; "
                       "give a DataLoader whose dataset returns (image, label) pairs")


def _read_loader(loader: Iterable, what: str) -> Split:
    """One loader's batches as a split of float images ``(N, C, H, W)`` and class indices ``(N,)``."""
    xs, ys = [], []
    for batch in loader:
        x, y = inputs_and_labels(batch)
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if not x.is_floating_point() or x.dim() != 4:
            raise BnprobeError(f"the {what} loader gives {x.dtype} inputs of shape {tuple(x.shape)}; a study needs "
                               "float images (N, C, H, W), e.g. transforms.ToDtype(torch.float32, scale=True)")
        if y.is_floating_point() or y.is_complex() or y.dim() != 1 or len(y) != len(x):
            raise BnprobeError(f"the {what} loader gives {y.dtype} labels of shape {tuple(y.shape)} for {len(x)} "
                               "inputs; a study needs one integer class index per input (not one-hot)")
        xs.append(x.detach().float().cpu())
        ys.append(y.detach().long().cpu())
    if not xs:
        raise BnprobeError(f"the {what} loader gave no batches")
    return Split(torch.cat(xs), torch.cat(ys))


def permuted_subset(split: Split, n: int, seed: int, start: int = 0) -> Split:
    """``n`` samples of the permutation of ``split`` that ``seed`` fixes, from its ``start``-th on."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[start:start + n]
    order = order.to(split.x.device)
    return Split(split.x[order], split.y[order.to(split.y.device)])


Loader = Callable[..., Dataset]
_DATASETS: dict[str, Loader] = {}


def _registered() -> dict[str, Loader]:
    """The registry, with the built-in readers (mnist, fashion-mnist, cifar10) in it: they register
    when first asked for, so that importing the data stage reads no dataset code it does not use."""
    importlib.import_module("bnprobe.data._readers")
    return _DATASETS


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make a loader ``fn(data_root=None, image_size=None) -> Dataset`` known as ``name``."""

    def decorate(fn: Loader) -> Loader:
        _registered()[name] = fn  # the built-ins first, so that a name of the user's replaces theirs
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Names ``--dataset`` accepts (``folder:PATH`` aside)."""
    return sorted(_registered())


def load_dataset(name: str, *, data_root: str | Path | None = None, image_size: int | None = None,
                 channels: int | None = None) -> Dataset:
    """Load ``name`` as normalised tensors, resized to ``image_size`` and repeated to ``channels``.

    ``name`` is a registered dataset or ``folder:PATH``; ``data_root`` is where a dataset's files are
    looked for (and downloaded to when they are not found).
    """
    if name.startswith(FOLDER_PREFIX):
        from bnprobe.data._readers.folder import load_image_folder

        dataset = load_image_folder(name[len(FOLDER_PREFIX):], image_size=image_size)
    else:
        loader = _registered().get(name)
        if loader is None:
            raise UnknownNameError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}, "
                                   f"or {FOLDER_PREFIX}PATH for an image folder")
        dataset = loader(data_root=data_root, image_size=image_size)
    return adapt_channels(dataset, channels) if channels else dataset


def adapt_channels(dataset: Dataset, channels: int) -> Dataset:
    """Repeat a grey dataset to ``channels`` (e.g. 3 for torchvision models)."""
    if channels == dataset.channels:
        return dataset
    if dataset.channels != 1:
        raise BnprobeError(f"dataset {dataset.name} has {dataset.channels} channels and the model takes "
                           f"{channels}; pick a model built for {dataset.channels} channels")

    def repeat(split: Split) -> Split:
        return Split(split.x.repeat(1, channels, 1, 1), split.y)

    return replace(dataset, train=repeat(dataset.train), test=repeat(dataset.test),
                   info={**dataset.info, "channels_repeated_to": channels})


def normalise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Standardise both splits per channel with the training split's statistics."""
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    stats = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
    return (train_x - mean) / std, (test_x - mean) / std, stats


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` images to ``size`` x ``size``."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def from_pixels(name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                num_classes: int, image_size: int | None, augment_flip: bool, info: dict) -> Dataset:
    """A :class:`Dataset` from uint8 images ``(N, C, H, W)`` and labels, the way every file format ends.

    Pixels go to [0, 1], are resized to ``image_size`` (default: as stored) and standardised with the
    training split's statistics; the augmentation crops by an eighth of the size and flips if
    ``augment_flip``.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    for split, labels in (("train", train_y), ("test", test_y)):
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise BnprobeError(f"{name}: {split} labels run from {int(labels.min())} to {int(labels.max())}, "
                               f"outside 0..{num_classes - 1}; check the label files")
    size = image_size or int(train_x.shape[-1])
    train_f = resize(train_x.float().div_(255.0), size)
    test_f = resize(test_x.float().div_(255.0), size)
    train_f, test_f, stats = normalise(train_f, test_f)
    return Dataset(name, Split(train_f, train_y.long()), Split(test_f, test_y.long()), num_classes,
                   {**info, "image_size": size, **stats}, Augment.for_size(size, flip=augment_flip))


def cache_root() -> Path:
    """Where datasets are downloaded without ``--data-root``: ``$XDG_CACHE_HOME/bnprobe/datasets``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnprobe" / "datasets"


@register_dataset("digits")
def load_digits(data_root: str | Path | None = None, image_size: int | None = None) -> Dataset:
    """scikit-learn's 8x8 digits, split 80/20 stratified (seed 0), resized to 32x32 by default."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(range(len(labels)), test_size=0.2, stratify=bunch.target,
                                           random_state=0)
    size = image_size or 32
    train_x, test_x = resize(images[train_idx], size), resize(images[test_idx], size)
    train_x, test_x, stats = normalise(train_x, test_x)
    return Dataset("digits", Split(train_x, labels[train_idx]), Split(test_x, labels[test_idx]), 10,
                   {"source": "sklearn.datasets.load_digits", "split": "80/20 stratified, random_state=0",
                    "image_size": size, **stats})


