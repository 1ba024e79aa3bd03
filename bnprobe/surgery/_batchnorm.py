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


def eval_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 such that ``bn`` in eval mode computes ``x * scale + shift``.

    Missing pieces take their neutral values: weight 1 and bias 0 without affine parameters, mean 0 and
    variance 1 without running statistics.
    """
    channels = num_channels(bn)

    def stat(name: str, neutral: float) -> torch.Tensor:
        value = getattr(bn, name, None)
        if value is None:
            return torch.full((channels,), neutral, dtype=torch.float64)
        return value.detach().to("cpu", torch.float64)

    scale = stat("weight", 1.0) / torch.sqrt(stat("running_var", 1.0) + bn.eps)
    return scale, stat("bias", 0.0) - stat("running_mean", 0.0) * scale
