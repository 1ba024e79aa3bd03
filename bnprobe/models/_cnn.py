"""bnprobe's own CNNs: the paper's 4-conv network (``cnn4``) and VGG-16 for 32x32 inputs (``vgg16_cifar``)."""

from __future__ import annotations

from torch import nn

from bnprobe._common import HEADS
from bnprobe.errors import BnprobeError
from bnprobe.models._registry import register_model
from bnprobe.params import check_int


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]




class PlainCNN(nn.Module):
    """Conv-BN-ReLU stacks with max-pooling, then a linear classifier on the pooled or flattened features.

    ``head="gap"`` averages each channel over the positions (one feature per channel); ``"flatten"``
    keeps every position (``channels x (img_size / 2**pools)**2`` features), the classic MNIST CNN head.
    """

    def __init__(self, widths: list[int | str], num_classes: int, in_chans: int, head: str = "gap",
                 img_size: int = 28) -> None:
        super().__init__()
        if head not in HEADS:
            raise BnprobeError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
        check_int(type(self).__name__, "img_size", img_size, minimum=1)
        layers: list[nn.Module] = []
        channels, size = in_chans, img_size
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += _conv_bn_relu(channels, int(w))
                channels = int(w)
        if head == "flatten" and size < 1:
            raise BnprobeError(f"img_size {img_size} is too small for {widths.count('M')} max-pools; "
                               "the flatten head needs at least one position left")
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if head == "gap" else nn.Identity()
        self.classifier = nn.Linear(channels * (1 if head == "gap" else size * size), num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model
def cnn4(num_classes: int = 10, in_chans: int = 1, width: int = 32, head: str = "gap",
         img_size: int = 28) -> nn.Module:
    """4-conv CNN of the Potgieter et al. MNIST study: 2 x (conv-BN-ReLU x 2, max-pool), then the head.

    ``head``: ``"gap"`` (global average pooling, then linear) or ``"flatten"`` (the flattened
    ``2*width x img_size/4 x img_size/4`` map, then linear: the classic MNIST CNN).
    """
    check_int("cnn4", "width", width, minimum=1)
    return PlainCNN([width, width, "M", 2 * width, 2 * width, "M"], num_classes, in_chans, head, img_size)


@register_model
def vgg16_cifar(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    """VGG-16 with BN for 32x32 inputs: 13 conv-BN-ReLU layers, 5 max-pools, one linear layer."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    return PlainCNN(cfg, num_classes, in_chans)
