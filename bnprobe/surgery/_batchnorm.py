"""What counts as BatchNorm, where a model has it, and what one holds (channels, eval-mode affine)."""

from __future__ import annotations

import torch
from timm.layers import FrozenBatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

from bnprobe.errors import NoBatchNormError

#: Every module type that counts as BatchNorm.  ``_BatchNorm`` covers ``BatchNorm1d/2d/3d``,
#: ``SyncBatchNorm`` and timm's ``BatchNormAct2d``/``SyncBatchNormAct``; the frozen kinds keep their
#: statistics and affine parameters as buffers and derive from ``nn.Module`` directly.
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (_BatchNorm, FrozenBatchNorm2d, FrozenBatchNormAct2d)


def find_batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every BatchNorm of any kind in ``model``, in registration order.

    Only the outermost one is listed when a BatchNorm holds another (timm's ``SplitBatchNorm2d``), since
    swapping the outer one removes the inner ones.  The root module itself has path ``""``.
    """
    found: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        inside = any(path.startswith(f"{outer}.") or outer == "" for outer, _ in found)
        if isinstance(module, BATCHNORM_TYPES) and not inside:
            found.append((path, module))
    return found


def has_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` holds a BatchNorm of any kind in :data:`BATCHNORM_TYPES`."""
    return any(isinstance(m, BATCHNORM_TYPES) for m in model.modules())


def require_batchnorm(model: nn.Module) -> None:
    if not has_batchnorm(model):
        raise NoBatchNormError(f"{type(model).__name__} has no BatchNorm layer: there is nothing to compare")


def num_channels(bn: nn.Module) -> int:
    # torchvision's FrozenBatchNorm2d has no num_features, but always has a weight buffer
    return getattr(bn, "num_features", None) or bn.weight.shape[0]


def own_params(module: nn.Module) -> int:
    """Parameters of ``module`` itself; a norm-act layer's activation is kept, so it is not counted."""
    return sum(p.numel() for p in module.parameters(recurse=False))


def bn_value(bn: nn.Module, name: str, neutral: float) -> torch.Tensor:
    """``bn``'s ``weight``, ``bias``, ``running_mean`` or ``running_var`` in float64 on the CPU, whether a
    parameter or a buffer; where it has none, the neutral value (weight 1, bias 0, mean 0, variance 1)."""
    value = getattr(bn, name, None)
    if value is None:
        return torch.full((num_channels(bn),), neutral, dtype=torch.float64)
    return value.detach().to("cpu", torch.float64)


def eval_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 such that ``bn`` in eval mode computes ``x * scale + shift``.

    Missing pieces take their neutral values (:func:`bn_value`).
    """
    scale = bn_value(bn, "weight", 1.0) / torch.sqrt(bn_value(bn, "running_var", 1.0) + bn.eps)
    return scale, bn_value(bn, "bias", 0.0) - bn_value(bn, "running_mean", 0.0) * scale
