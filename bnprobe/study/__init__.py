"""Study: the configuration (:class:`StudyConfig`), the run over variants and seeds with its ledger of
finished runs, and re-probing a finished study without training.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.study._dir": ["check_out_dir"],
    "bnprobe.study._file": ["read_study_file"],
    "bnprobe.study._run": [
        "RunTimings", "StudyConfig", "StudyListener", "prepare_dataset", "reprobe_study", "run_study",
    ],
})
