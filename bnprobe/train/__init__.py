"""Training: the loop (:func:`train_model`), bnprobe's own resumable train state, seeds trained together
in one vmapped model, the CUDA-graph step, distributed runs, BatchNorm re-estimation and the
named warnings (flags) about a run.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe._common": ["CHECKPOINT_MODES"],
    "bnprobe.train._bnstats": ["batchnorm_layers"],
    "bnprobe.train._distributed": ["World", "current_world", "launched_world", "process_group"],
    "bnprobe.train._flags": ["CHECKS", "run_flags"],
    "bnprobe.train._fused": ["FusedRun", "FusionUnavailable", "fusion_blocker", "train_fused"],
    "bnprobe.train._loop": [
        "PER_VARIANT", "TRAIN_PARTS", "TrainConfig", "TrainResult", "check_last_batch", "evaluate",
        "resolve_device", "train_model",
    ],
    "bnprobe.train._state": [
        "CHECKPOINT_DIR", "checkpoint_path", "config_differences", "first_difference",
        "keep_final_weights", "load_train_state", "run_stem",
    ],
})
