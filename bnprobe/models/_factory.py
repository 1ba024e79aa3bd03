"""Model names -> freshly initialised ``nn.Module``.

Three namespaces, one factory (:func:`create_model`), in timm's style:

* bnprobe's built-ins, registered with :func:`register_model` (``cnn4``, ``vgg16_cifar``);
* ``tv:NAME`` -- a torchvision classification model (``torchvision.models.get_model``), which
  always takes 3 input channels;
* any other name -- a timm model, built with ``pretrained=False`` and the dataset's ``num_classes``
  and ``in_chans``.

Nothing is ever downloaded: weights come only from ``--checkpoint``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from fnmatch import fnmatch

from torch import nn

from bnprobe._common import HEADS
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.params import check_int

TORCHVISION_PREFIX = "tv:"

ModelFn = Callable[..., nn.Module]
_BUILTINS: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Decorator: register ``fn(num_classes=..., in_chans=..., **kwargs)`` under its function name."""
    _BUILTINS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """bnprobe's built-in model names matching the wildcard ``pattern``."""
    return sorted(n for n in _BUILTINS if fnmatch(n, pattern))


def is_builtin(name: str) -> bool:
    return name in _BUILTINS


def input_channels(name: str, dataset_channels: int) -> int:
    """How many input channels the model called ``name`` will be built for."""
    return 3 if name.startswith(TORCHVISION_PREFIX) else dataset_channels


def create_model(name: str, *, num_classes: int, in_chans: int = 3, img_size: int | None = None,
                 **kwargs) -> nn.Module:
    """Build ``name`` from scratch for ``num_classes`` classes and ``in_chans`` input channels.

    ``img_size`` (the input's height and width) reaches the built-in models that take one -- ``cnn4``'s
    flatten head sizes its classifier from it; timm and torchvision models adapt to any size.
    """
    if name in _BUILTINS:
        fn = _BUILTINS[name]
        if img_size is not None and "img_size" in inspect.signature(fn).parameters:
            kwargs.setdefault("img_size", img_size)
        return fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if name.startswith(TORCHVISION_PREFIX):
        return _create_torchvision(name[len(TORCHVISION_PREFIX):], num_classes, **kwargs)
    import timm

    if not timm.is_model(name):
        raise UnknownNameError(f"unknown model {name!r}; {_suggest(name)}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _create_torchvision(name: str, num_classes: int, **kwargs) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f"closest torchvision names: {', '.join('tv:' + c for c in close)}" if close else \
            "see torchvision.models.list_models()"
        raise UnknownNameError(f"unknown torchvision model {name!r}; {hint}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def _suggest(name: str) -> str:
    import timm

    candidates = list(_BUILTINS) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        close = [c for c in timm.list_models(f"*{name[:4]}*")][:3]
    if close:
        return f"closest names: {', '.join(close)}"
    return "see `timm.list_models()` or prefix torchvision models with 'tv:'"


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
