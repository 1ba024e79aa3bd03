"""Shared test setup: no hub access, few threads, small deterministic inputs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from bnprobe.data._loaders import Dataset, Split, register_dataset  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_split():
    """40 random 1x8x8 images in 4 classes."""
    from bnprobe.data import Split

    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4)


@register_dataset("tiny-study")
def _tiny_study(data_root=None, image_size=None) -> Dataset:
    """``--dataset tiny-study``: 96 grey 8x8 images in 4 classes, 64 to train and 32 to test, so that a
    whole study (``bnprobe run cnn4 --dataset tiny-study``) takes seconds."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("tiny-study", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)
