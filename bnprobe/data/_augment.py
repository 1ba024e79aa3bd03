"""Batched, seeded data augmentation on the training device.

bnprobe's datasets sit on the training device as one tensor per split, so augmentation runs there
too: one gather per batch, drawn from a generator that lives on the same device.  No worker
processes, no per-image Python and no host round trip, and a seed fixes every draw.

Two transformations, the ones the MNIST and CIFAR literature trains with:

* **random crop with padding** -- the batch is padded by ``pad`` pixels on every side and each image
  is cut back to its own size at an offset drawn uniformly from ``0 .. 2*pad`` in each direction, i.e.
  shifted by up to ``pad`` pixels.  The padding *reflects* the image rather than filling zeros: the
  data are already normalised, so a zero border would be a frame of the mean colour, while reflection
  continues the background (black on the digit datasets) the way the image would;
* **horizontal flip** with probability 1/2, only where a mirrored image still shows its class.

Each dataset loader attaches its policy (see ``docs/training.md``): ``mnist`` crops only (a mirrored
2 or 7 is no digit), ``fashion-mnist``, ``cifar10`` and ``folder:`` crop and flip (a mirrored shoe,
shirt or car is still one), ``digits`` has none (its 8x8 digits fill the frame).  ``pad`` is an
eighth of the image size: 4 pixels on 32x32 (the CIFAR standard), 3 on MNIST's 28x28.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """A random crop of ``pad`` pixels (0: none) and, if ``flip``, a random horizontal flip."""

    pad: int = 0
    flip: bool = False

    @classmethod
    def for_size(cls, image_size: int, *, flip: bool) -> Augment:
        """The policy for ``image_size``-pixel images: pad by an eighth of the size."""
        return cls(pad=max(1, image_size // 8), flip=flip)

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``(N, C, H, W)``; draws come from ``generator`` (on the images' device)."""
        if not self.active:
            return images
        n, _, height, width = images.shape
        device = images.device
        pad = min(self.pad, height - 1, width - 1)  # reflection needs pad < size
        source = F.pad(images, (pad, pad, pad, pad), mode="reflect") if pad > 0 else images
        dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
        dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
        rows = dy + torch.arange(height, device=device)
        cols = dx + torch.arange(width, device=device)
        if self.flip:
            mirrored = torch.rand(n, 1, generator=generator, device=device) < 0.5
            cols = torch.where(mirrored, cols.flip(1), cols)
        batch = torch.arange(n, device=device)[:, None, None]
        # Advanced indices around a slice put their dimensions first: (N, H, W, C) -> (N, C, H, W).
        return source[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
