"""Model names -> freshly initialised ``nn.Module``.

Three namespaces, one factory (:func:`create_model`), in timm's style:

* bnprobe's built-ins, registered with :func:`~bnprobe.models._registry.register_model` (``cnn4``,
  ``vgg16_cifar``: :mod:`bnprobe.models._cnn`);
* ``tv:NAME`` -- a torchvision classification model (``torchvision.models.get_model``), which
  always takes 3 input channels;
* any other name -- a timm model (``hf-hub:timm/...`` names too), built with the dataset's
  ``num_classes`` and ``in_chans``.

Models are freshly initialised unless ``pretrained`` asks for published weights, which come from the
local caches or a file and are never downloaded (:mod:`bnprobe.models._pretrained`).
"""

from __future__ import annotations

import difflib
import inspect

from torch import nn

from bnprobe._common import first_line
from bnprobe._hints import option, setting
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.models._pretrained import (
    HF_HUB_PREFIX,
    create_timm_pretrained,
    load_adapted,
    torchvision_pretrained_state,
)
from bnprobe.models._registry import builtins

TORCHVISION_PREFIX = "tv:"


def input_channels(name: str, dataset_channels: int) -> int:
    """How many input channels the model called ``name`` will be built for."""
    return 3 if name.startswith(TORCHVISION_PREFIX) else dataset_channels


def create_model(name: str, *, num_classes: int, in_chans: int = 3, img_size: int | None = None,
                 pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build ``name`` for ``num_classes`` classes and ``in_chans`` input channels.

    ``img_size`` (the input's height and width) reaches the built-in models that take one -- ``cnn4``'s
    flatten head sizes its classifier from it; timm and torchvision models adapt to any size.
    ``pretrained``: False builds the model from scratch; True loads the weights ``name`` is published
    with from the local cache, a path loads them from that file, adapted to the classes and channels
    (:mod:`bnprobe.models._pretrained`).
    """
    if name in builtins():
        if pretrained:
            raise BnprobeError(f"{name} is a bnprobe model with no published weights; load weights trained "
                               f"for this dataset with {option('init_weights', 'FILE')} instead of "
                               f"{setting('pretrained')}")
        fn = builtins()[name]
        if img_size is not None and "img_size" in inspect.signature(fn).parameters:
            kwargs.setdefault("img_size", img_size)
        return fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if name.startswith(TORCHVISION_PREFIX):
        model = _create_torchvision(name[len(TORCHVISION_PREFIX):], num_classes, **kwargs)
        if pretrained:
            load_adapted(model, torchvision_pretrained_state(name[len(TORCHVISION_PREFIX):], pretrained), name)
        return model
    import timm

    if not (name.startswith(HF_HUB_PREFIX) or timm.is_model(name)):
        raise UnknownNameError(f"unknown model {name!r}; {_suggest(name)}")
    if pretrained:
        return create_timm_pretrained(name, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except OSError as exc:  # an hf-hub: name whose config is not in the hub cache, offline
        raise BnprobeError(f"cannot read the config of {name} from the Hugging Face hub cache ({first_line(exc)}); "
                           "download the model once where there is a network") from None


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
