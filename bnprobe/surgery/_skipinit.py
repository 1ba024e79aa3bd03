"""**skipinit** (:func:`apply_skipinit`, ``identity+skipinit``): in every residual block it recognises
the *last conv of the residual branch is zero-initialised* (Fixup-style; all its parameters), so each
block starts out as its shortcut.  Recognised: timm's ResNet/ResNeXt/SE-ResNet, legacy SENet, Res2Net,
ResNeSt, SKNet, RegNet, CSPNet/DarkNet and ByobNet (GERNet, ResNeXt-ts, ...) blocks, timm's
EfficientNet/MobileNet ``InvertedResidual``/``DepthwiseSeparableConv``/``EdgeResidual``, and
torchvision's ResNet, RegNet, MNASNet, MobileNetV2/V3 and EfficientNet blocks -- each only where the
block actually has a skip.  This form was chosen over a learnable zero gain because it adds no
parameters and no modules, so layer names and parameter counts stay comparable across variants.  The
branch starts at exactly zero when the new norm maps zero to zero (``identity``, ``groupnorm``,
``layernorm``, ``instancenorm``; not ``frozen`` or ``fold``, whose shift is kept).  A target that keeps
the BatchNorm's weight (all but ``identity``) gets weight 1 where a BatchNorm in such a block had an
all-zero one (timm's ``zero_init_last``; :func:`unzero_branch_norms`): the zeroed conv starts the
branch at zero instead, and with both zero neither would ever get a gradient.  Blocks of other
families are left as they are (:func:`register_skipinit` adds one); when none is recognised the report
says "no residual blocks recognised".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.models import _efficientnet_blocks as timm_effnet
from timm.models import byobnet as timm_byobnet
from timm.models import cspnet as timm_cspnet
from timm.models import regnet as timm_regnet
from timm.models import res2net as timm_res2net
from timm.models import resnest as timm_resnest
from timm.models import resnet as timm_resnet
from timm.models import senet as timm_senet
from timm.models import sknet as timm_sknet
from torch import nn
from torchvision.models import efficientnet as tv_efficientnet
from torchvision.models import mnasnet as tv_mnasnet
from torchvision.models import mobilenetv2 as tv_mobilenetv2
from torchvision.models import mobilenetv3 as tv_mobilenetv3
from torchvision.models import regnet as tv_regnet
from torchvision.models import resnet as tv_resnet

from bnprobe.errors import BnprobeError

#: Residual block type -> the path (inside the block) of the last conv of its residual branch, or None
#: when this instance has no skip connection.  Subclasses are found through the MRO.
_LAST_CONV: dict[type[nn.Module], Callable[[nn.Module], str | None]] = {
    timm_resnet.BasicBlock: lambda b: "conv2",
    timm_resnet.Bottleneck: lambda b: "conv3",
    timm_senet.SEResNetBlock: lambda b: "conv2",
    timm_senet.Bottleneck: lambda b: "conv3",
    timm_res2net.Bottle2neck: lambda b: "conv3",
    timm_resnest.ResNestBottleneck: lambda b: "conv3",
    timm_sknet.SelectiveKernelBasic: lambda b: "conv2.conv",
    timm_sknet.SelectiveKernelBottleneck: lambda b: "conv3.conv",
    timm_regnet.Bottleneck: lambda b: "conv3.conv" if b.downsample is not None else None,
    timm_cspnet.BottleneckBlock: lambda b: "conv3.conv",
    timm_cspnet.DarkBlock: lambda b: "conv2.conv",
    timm_cspnet.EdgeBlock: lambda b: "conv2.conv",
    timm_byobnet.BasicBlock: lambda b: "conv2_kxk.conv" if b.shortcut is not None else None,
    timm_byobnet.BottleneckBlock: lambda b: "conv3_1x1.conv" if b.shortcut is not None else None,
    timm_byobnet.DarkBlock: lambda b: "conv2_kxk.conv" if b.shortcut is not None else None,
    timm_byobnet.EdgeBlock: lambda b: "conv2_1x1.conv" if b.shortcut is not None else None,
    timm_effnet.DepthwiseSeparableConv: lambda b: "conv_pw" if b.has_skip else None,
    timm_effnet.InvertedResidual: lambda b: "conv_pwl" if b.has_skip else None,
    timm_effnet.EdgeResidual: lambda b: "conv_pwl" if b.has_skip else None,
    tv_resnet.BasicBlock: lambda b: "conv2",
    tv_resnet.Bottleneck: lambda b: "conv3",
    tv_regnet.ResBottleneckBlock: lambda b: "f.c.0",
    tv_mnasnet._InvertedResidual: lambda b: f"layers.{len(b.layers) - 2}" if b.apply_residual else None,
    tv_mobilenetv2.InvertedResidual: lambda b: f"conv.{len(b.conv) - 2}" if b.use_res_connect else None,
    tv_mobilenetv3.InvertedResidual: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
    tv_efficientnet.MBConv: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
    tv_efficientnet.FusedMBConv: lambda b: f"block.{len(b.block) - 1}.0" if b.use_res_connect else None,
}


LastConv = Callable[[nn.Module], "str | None"]
"""A block -> the path (inside it) of its residual branch's last conv, or None when it has no skip."""


def register_skipinit(block: type[nn.Module], last_conv: str | LastConv) -> None:
    """Teach skipinit a residual block: ``last_conv`` is the path of the residual branch's last conv
    inside the block (``"conv2"``), or a function of the block that gives it, None for an instance
    without a skip.  Subclasses of ``block`` are recognised too; registering a type again replaces it.
    """
    if not (isinstance(block, type) and issubclass(block, nn.Module)):
        raise BnprobeError(f"register_skipinit: {block!r} is not an nn.Module subclass; pass the block's class")
    if isinstance(last_conv, str):
        path = last_conv
        _LAST_CONV[block] = lambda b: path
    elif callable(last_conv):
        _LAST_CONV[block] = last_conv
    else:
        raise BnprobeError(f"register_skipinit({block.__name__}): last_conv must be a path such as 'conv2' or a "
                           f"function of the block, got {last_conv!r}")


def _residual_branches(model: nn.Module) -> list[tuple[str, str]]:
    """``(block path, path of its residual branch's last conv)`` for every residual block recognised in
    ``model`` (paths from the model's root)."""
    found = []
    for path, block in model.named_modules():
        last_conv = next((_LAST_CONV[t] for t in type(block).__mro__ if t in _LAST_CONV), None)
        rel = last_conv(block) if last_conv else None
        if rel is None:
            continue
        try:
            block.get_submodule(rel)
        except AttributeError:
            raise BnprobeError(f"skipinit: {type(block).__name__} at {path or 'the root'} has no submodule {rel!r}, "
                               "the residual branch's last conv it was registered with") from None
        found.append((path, f"{path}.{rel}" if path else rel))
    return found


def apply_skipinit(model: nn.Module) -> list[str]:
    """Zero-initialise the last conv of every recognised residual branch, in place (Fixup-style).

    Each recognised block then starts out as its shortcut, which lets a network without normalisation
    train from depth.  Returns the paths of the convs that were zeroed; an empty list means no residual
    block was recognised (see the module docstring for the families).
    """
    changed = [conv for _, conv in _residual_branches(model)]
    with torch.no_grad():  # every parameter: timm's MixedConv2d holds one conv per kernel size
        for conv in changed:
            for param in model.get_submodule(conv).parameters():
                param.zero_()
    return changed


def unzero_branch_norms(model: nn.Module, batchnorms: list[tuple[str, nn.Module]]) -> list[str]:
    """Set to 1 the weight of each of ``batchnorms`` that is all zero and sits in a recognised residual
    block, in place, before the swap hands it on; return their paths.

    Such a weight is how the model starts that branch at zero (timm's ``zero_init_last``: the branch's
    last norm, right after the conv :func:`apply_skipinit` zeroes).  skipinit starts the branch at zero
    by that conv instead; kept as well, the zero weight would see only zeros from the zero conv, and
    neither would ever get a gradient.
    """
    blocks = [block for block, _ in _residual_branches(model)]
    reset = []
    for path, bn in batchnorms:
        weight = getattr(bn, "weight", None)
        in_block = any(block == "" or path.startswith(f"{block}.") for block in blocks)
        if in_block and weight is not None and not weight.any():
            with torch.no_grad():
                weight.fill_(1.0)
            reset.append(path)
    return reset


def _listed(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")


def unzero_note(reset: list[str]) -> str:
    return (f"skipinit: {len(reset)} zero norm weights taken as 1 ({_listed(reset)}): after the zeroed conv, a zero "
            "weight would leave both without gradient")


def skipinit_note(model: nn.Module, changed: list[str]) -> str:
    if not changed:
        return f"skipinit: no residual blocks recognised in {type(model).__name__}; nothing zero-initialised"
    return f"skipinit: zero-initialised the last conv of {len(changed)} residual branches ({_listed(changed)})"
