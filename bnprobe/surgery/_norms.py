"""The modules a swap puts where a BatchNorm was."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormAct(nn.Module):
    """``norm -> drop -> act``: the replacement for a timm norm-act layer.

    ``drop`` and ``act`` are the replaced layer's own module objects, registered under the same child
    names, so the activation keeps both its behaviour and its module path (``bn1.act``).
    """

    def __init__(self, norm: nn.Module, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(x)))


class IdentityNorm(nn.Identity):
    """The ``identity`` target: no normalisation, but a new tensor out, as from the BatchNorm it replaces.

    An ``nn.Identity`` subclass (``isinstance(m, nn.Identity)`` holds), with no parameters or buffers and
    one input, whose ``forward`` returns a copy of its input instead of the input itself.  Returning the
    input itself, as ``nn.Identity`` does, would let an in-place activation after it (timm's
    ``inplace=True`` ReLU) overwrite a tensor that another branch still reads -- DPN's concatenated
    input, a pre-activation ResNet's shortcut -- and so change what the model computes.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # the argument's name is nn.Identity's
        return input.clone()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels (dim 1) at every position, for inputs of any rank >= 2."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.movedim(1, -1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class InstanceNorm(nn.GroupNorm):
    """Affine instance norm for inputs of any rank >= 2: a GroupNorm with one channel per group.

    Unlike ``nn.InstanceNorm2d`` it does not depend on the input rank (the BatchNorm it replaces may be
    1d, 2d or 3d) and keeps no running statistics, so train and eval mode compute the same thing.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_channels, num_channels, eps=eps, affine=True)


class ChannelBias(nn.Module):
    """Per-channel ``x + bias`` along dim 1, zero-initialised: a conv bias where no conv can hold it."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view((1, -1) + (1,) * (x.ndim - 2))

    def extra_repr(self) -> str:
        return f"{self.bias.shape[0]}"


class ChannelAffine(nn.Module):
    """Per-channel ``x * scale + shift`` along dim 1: a BatchNorm with its statistics frozen in."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, trainable: bool) -> None:
        super().__init__()
        if trainable:
            self.scale = nn.Parameter(scale.clone())
            self.shift = nn.Parameter(shift.clone())
        else:
            self.register_buffer("scale", scale.clone())
            self.register_buffer("shift", shift.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"{self.scale.shape[0]}, trainable={isinstance(self.scale, nn.Parameter)}"
