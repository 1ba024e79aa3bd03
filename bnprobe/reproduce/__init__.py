"""Reproduce: the presets of published studies, the verdict on each of their findings and how robust
the verdicts are to the clustering settings.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.reproduce._presets": [
        "PRESETS", "VERDICT_LABELS", "Changes", "PresetStudy", "Reproduction", "assess", "build_study",
        "get_preset", "load_study_dataset", "model_factory", "model_label", "reproduce",
    ],
    "bnprobe.reproduce._robustness": [
        "DEFAULT_GRID", "ROBUSTNESS_DIR", "ROBUSTNESS_FILE", "RobustnessResult", "check_robustness", "parse_grid",
        "robustness",
    ],
    "bnprobe.reproduce._verdict": ["SeedsNeeded", "Verdict"],
    "bnprobe.reproduce._sparsity_verdict": ["SPARSITY_THRESHOLD", "sparsity_change_verdict"],
    "bnprobe.reproduce._generalisation_verdict": ["GAP_MARGIN", "generalisation_verdict"],
    "bnprobe.reproduce._clustering_verdict": ["CLUSTERING_MARGIN", "PRIMARY_METRIC", "clustering_verdict"],
})
