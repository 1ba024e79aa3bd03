"""Training: the loop (:func:`train_model`), bnprobe's own resumable train state, seeds trained together
in one vmapped model, the CUDA-graph step, distributed runs, BatchNorm re-estimation and the
named warnings (flags) about a run.
"""

from bnprobe.train._bnstats import batchnorm_layers
from bnprobe.train._distributed import World, current_world, launched_world, process_group
from bnprobe.train._flags import CHECKS, run_flags
from bnprobe.train._fused import FusedRun, FusionUnavailable, fusion_blocker, train_fused
from bnprobe.train._loop import (
    PER_VARIANT,
    TRAIN_PARTS,
    TrainConfig,
    TrainResult,
    check_last_batch,
    evaluate,
    resolve_device,
    train_model,
)
from bnprobe.train._state import (
    CHECKPOINT_DIR,
    CHECKPOINT_MODES,
    checkpoint_path,
    config_differences,
    first_difference,
    keep_final_weights,
    load_train_state,
    run_stem,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_MODES",
    "CHECKS",
    "PER_VARIANT",
    "TRAIN_PARTS",
    "batchnorm_layers",
    "check_last_batch",
    "checkpoint_path",
    "config_differences",
    "current_world",
    "evaluate",
    "first_difference",
    "fusion_blocker",
    "keep_final_weights",
    "launched_world",
    "load_train_state",
    "process_group",
    "resolve_device",
    "run_flags",
    "run_stem",
    "train_fused",
    "train_model",
    "FusedRun",
    "FusionUnavailable",
    "TrainConfig",
    "TrainResult",
    "World",
]
