"""Surgery: find a model's BatchNorm layers and swap them for a norm target (identity, GroupNorm, ...),
folding or adding biases and applying skipinit, with a :class:`SwapReport` of every change.

* ``_batchnorm`` -- what counts as BatchNorm and where a model has it;
* ``_norms`` -- the modules put where a BatchNorm was;
* ``_targets`` -- the target table, :func:`register_target` and the spec parser;
* ``_fold`` -- which BatchNorm follows a conv (torch.fx) and folding it in;
* ``_skipinit`` -- the residual-block table and :func:`register_skipinit`;
* ``_swap`` -- :func:`swap_norms` and :func:`make_variant`, which put the rest together.
"""

from bnprobe.surgery._batchnorm import BATCHNORM_TYPES, find_batchnorms, has_batchnorm
from bnprobe.surgery._norms import ChannelAffine, ChannelBias, ChannelLayerNorm, IdentityNorm, InstanceNorm, NormAct
from bnprobe.surgery._skipinit import apply_skipinit, register_skipinit
from bnprobe.surgery._swap import SwapRecord, SwapReport, make_variant, swap_norms
from bnprobe.surgery._targets import NormFactory, TargetSpec, list_targets, parse_target, register_target

__all__ = [
    "BATCHNORM_TYPES",
    "ChannelAffine",
    "ChannelBias",
    "ChannelLayerNorm",
    "IdentityNorm",
    "InstanceNorm",
    "NormAct",
    "NormFactory",
    "SwapRecord",
    "SwapReport",
    "TargetSpec",
    "apply_skipinit",
    "find_batchnorms",
    "has_batchnorm",
    "list_targets",
    "make_variant",
    "parse_target",
    "register_skipinit",
    "register_target",
    "swap_norms",
]
