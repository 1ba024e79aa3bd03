"""``folder:PATH``: an image-folder tree, loaded whole into tensors.

The layout is torchvision's ``ImageFolder`` one level down::

    PATH/train/<class>/<image>      the training split
    PATH/test/<class>/<image>       the test split (``PATH/val/`` when there is no ``test/``)

Classes are the training subfolders in sorted order; a test image is labelled by its folder's name,
so the test split may lack a class but may not add one.  Every image is opened with PIL, converted
to grey (``L``) when the first training image is grey and to ``RGB`` otherwise, resized so its
shorter side is ``image_size`` and centre-cropped to a square (``image_size`` defaults to the first
training image's shorter side).  All images must fit in memory as float32.  Augmentation crops by an
eighth of the size and flips: folders usually hold natural images (``--no-augment`` if yours are not
mirror-symmetric).
"""

from __future__ import annotations

from pathlib import Path

import torch

from bnprobe.data._loaders import FOLDER_PREFIX, Dataset, from_pixels
from bnprobe.errors import BnprobeError

GREY_MODES = ("1", "L", "I", "I;16", "F")


def load_image_folder(path: str | Path, image_size: int | None = None) -> Dataset:
    """The dataset in the image-folder tree at ``path`` (see the module docstring)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser()
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise BnprobeError(f"{FOLDER_PREFIX}{path}: expected subfolders train/ and test/ (or val/) under {root}, "
                           "each with one folder of images per class")
    try:
        train_set, test_set = ImageFolder(str(root / "train")), ImageFolder(str(test_dir))
    except (FileNotFoundError, OSError) as exc:
        raise BnprobeError(f"{FOLDER_PREFIX}{path}: {exc}") from None
    extra = sorted(set(test_set.classes) - set(train_set.classes))
    if extra:
        raise BnprobeError(f"{FOLDER_PREFIX}{path}: {test_dir.name}/ has classes that train/ lacks: {', '.join(extra)}")
    with Image.open(train_set.samples[0][0]) as first:
        mode = "L" if first.mode in GREY_MODES else "RGB"
        size = image_size or min(first.size)

    def load(samples: list[tuple[str, int]], classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.empty(len(samples), 1 if mode == "L" else 3, size, size, dtype=torch.uint8)
        for i, (file, _) in enumerate(samples):
            images[i] = _read(file, mode, size)
        labels = torch.tensor([train_set.class_to_idx[classes[c]] for _, c in samples])
        return images, labels

    return from_pixels(f"{FOLDER_PREFIX}{path}", load(train_set.samples, train_set.classes),
                       load(test_set.samples, test_set.classes), num_classes=len(train_set.classes),
                       image_size=size, augment_flip=True,
                       info={"source": str(root), "test_folder": test_dir.name, "classes": train_set.classes})


def _read(file: str, mode: str, size: int) -> torch.Tensor:
    """One image as ``(C, size, size)`` uint8: converted, shorter side resized, centre-cropped."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(file) as image:
            tensor = TF.pil_to_tensor(image.convert(mode))
    except (OSError, UnidentifiedImageError) as exc:
        raise BnprobeError(f"cannot read image {file}: {exc}") from None
    return TF.center_crop(TF.resize(tensor, size, antialias=True), [size, size])
