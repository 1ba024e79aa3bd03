"""Reproduce: the presets of published studies, the verdict on each of their findings and how robust
the verdicts are to the clustering settings.
"""

from bnprobe.reproduce._presets import (
    PRESETS,
    VERDICT_LABELS,
    Changes,
    PresetStudy,
    Reproduction,
    assess,
    build_study,
    get_preset,
    load_study_dataset,
    model_factory,
    model_label,
    reproduce,
)
from bnprobe.reproduce._robustness import (
    DEFAULT_GRID,
    ROBUSTNESS_DIR,
    ROBUSTNESS_FILE,
    RobustnessResult,
    check_robustness,
    parse_grid,
    robustness,
)
from bnprobe.reproduce._verdict import Verdict

__all__ = [
    "assess",
    "model_factory",
    "DEFAULT_GRID",
    "PRESETS",
    "ROBUSTNESS_DIR",
    "ROBUSTNESS_FILE",
    "VERDICT_LABELS",
    "build_study",
    "check_robustness",
    "get_preset",
    "load_study_dataset",
    "model_label",
    "parse_grid",
    "reproduce",
    "robustness",
    "Changes",
    "PresetStudy",
    "Reproduction",
    "RobustnessResult",
    "Verdict",
]
