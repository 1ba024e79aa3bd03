"""Surgery: find a model's BatchNorm layers and swap them for a norm target (identity, GroupNorm, ...),
folding or adding biases and applying skipinit, with a :class:`SwapReport` of every change.
"""

from bnprobe.surgery._swap import (
    SwapReport,
    has_batchnorm,
    list_targets,
    make_variant,
    parse_target,
    swap_norms,
)

__all__ = [
    "has_batchnorm",
    "list_targets",
    "make_variant",
    "parse_target",
    "swap_norms",
    "SwapReport",
]
