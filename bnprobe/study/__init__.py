"""Study: the configuration (:class:`StudyConfig`), the run over variants and seeds with its ledger of
finished runs, and re-probing a finished study without training.

* ``_config`` -- :class:`StudyConfig` and reading older saved configs;
* ``_events`` -- :class:`StudyListener`'s hooks and :class:`RunTimings`;
* ``_run`` -- :func:`run_study`: data, seeded models, variants, training, capture, probes, the ledger;
* ``_reprobe`` -- a finished study reopened: :func:`reprobe_study`, :func:`load_run`;
* ``_activations`` -- :func:`probe_activations`: probes on activations from anywhere, as a study's results;
* ``_tensorboard`` -- :class:`TensorBoardListener`, a study logged to TensorBoard as it runs;
* ``_dir`` and ``_file`` -- the output folder's rules, and TOML/YAML study files;
* ``_executor``, ``_ray`` and ``_ray_helpers`` -- where runs train: here, or as Ray tasks;
* ``_shards`` -- part of a study's seeds (``--seeds 4-7``, ``--shard K/N``) and :func:`merge_studies`.
"""

from bnprobe._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.study._dir": ["check_out_dir"],
    "bnprobe.study._file": ["read_study_file"],
    "bnprobe.study._activations": ["ActivationRun", "probe_activations"],
    "bnprobe.study._config": ["StudyConfig"],
    "bnprobe.study._events": ["Listeners", "RunTimings", "StudyListener"],
    "bnprobe.study._reprobe": ["load_run", "reprobe_study"],
    "bnprobe.study._shards": ["merge_studies"],
    "bnprobe.study._run": ["prepare_dataset", "run_study"],
    "bnprobe.study._tensorboard": ["TensorBoardListener"],
})
