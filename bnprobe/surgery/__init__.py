"""Surgery: find a model's BatchNorm layers and swap them for a norm target (identity, GroupNorm, ...),
folding or adding biases and applying skipinit, with a :class:`SwapReport` of every change.

* ``_batchnorm`` -- what counts as BatchNorm and where a model has it;
* ``_norms`` -- the modules put where a BatchNorm was;
* ``_targets`` -- the target table, :func:`register_target` and the spec parser;
* ``_affine`` -- a replacement norm taking over the BatchNorm's weight and bias, and saying so;
* ``_fold`` -- which BatchNorm follows a conv (torch.fx) and folding it in;
* ``_skipinit`` -- the residual-block table and :func:`register_skipinit`;
* ``_swap`` -- :func:`swap_norms` and :func:`make_variant`, which put the rest together.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.surgery._batchnorm": ["BATCHNORM_TYPES", "find_batchnorms", "has_batchnorm"],
    "bnprobe.surgery._norms": [
        "ChannelAffine", "ChannelBias", "ChannelLayerNorm", "IdentityNorm", "InstanceNorm", "NormAct",
    ],
    "bnprobe.surgery._skipinit": ["apply_skipinit", "register_skipinit"],
    "bnprobe.surgery._swap": ["SwapRecord", "SwapReport", "make_variant", "swap_norms"],
    "bnprobe.surgery._targets": ["NormFactory", "TargetSpec", "list_targets", "parse_target", "register_target"],
})
