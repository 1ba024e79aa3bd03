"""Study: the configuration (:class:`StudyConfig`), the run over variants and seeds with its ledger of
finished runs, and re-probing a finished study without training.
"""

from bnprobe.study._dir import check_out_dir
from bnprobe.study._file import read_study_file
from bnprobe.study._run import (
    RunTimings,
    StudyConfig,
    StudyListener,
    prepare_dataset,
    reprobe_study,
    run_study,
)

__all__ = [
    "check_out_dir",
    "prepare_dataset",
    "read_study_file",
    "reprobe_study",
    "run_study",
    "RunTimings",
    "StudyConfig",
    "StudyListener",
]
