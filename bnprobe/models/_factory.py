"""Model names -> freshly initialised ``nn.Module``.

Three namespaces, one factory (:func:`create_model`), in timm's style:

* bnprobe's built-ins, registered with :func:`~bnprobe.models._registry.register_model` (``cnn4``,
  ``vgg16_cifar``: :mod:`bnprobe.models._cnn`);
* ``tv:NAME`` -- a torchvision classification model (``torchvision.models.get_model``), which
  always takes 3 input channels;
* any other name -- a timm model, built with ``pretrained=False`` and the dataset's ``num_classes``
  and ``in_chans``.

Nothing is ever downloaded: weights come only from ``--init-weights``.
"""

from __future__ import annotations

import difflib
import inspect

from torch import nn

from bnprobe.errors import UnknownNameError
from bnprobe.models._registry import builtins

TORCHVISION_PREFIX = "tv:"


def input_channels(name: str, dataset_channels: int) -> int:
    """How many input channels the model called ``name`` will be built for."""
    return 3 if name.startswith(TORCHVISION_PREFIX) else dataset_channels


def create_model(name: str, *, num_classes: int, in_chans: int = 3, img_size: int | None = None,
                 **kwargs) -> nn.Module:
    """Build ``name`` from scratch for ``num_classes`` classes and ``in_chans`` input channels.

    ``img_size`` (the input's height and width) reaches the built-in models that take one -- ``cnn4``'s
    flatten head sizes its classifier from it; timm and torchvision models adapt to any size.
    """
    if name in builtins():
        fn = builtins()[name]
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

    candidates = list(builtins()) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        close = [c for c in timm.list_models(f"*{name[:4]}*")][:3]
    if close:
        return f"closest names: {', '.join(close)}"
    return "see `timm.list_models()` or prefix torchvision models with 'tv:'"
