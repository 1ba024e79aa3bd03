"""Shared test setup: no hub access, few threads, small deterministic inputs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_split():
    """40 random 1x8x8 images in 4 classes."""
    from bnprobe.data import Split

    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4)
