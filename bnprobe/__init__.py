"""bnprobe: what BatchNorm does to a CNN's hidden representations.

The Python API mirrors the pipeline, one function per stage::

    import bnprobe

    data = bnprobe.load_dataset("digits")
    probes = bnprobe.build_probes("sparsity,hdbscan")
    model = bnprobe.create_model("resnet10t", num_classes=10, in_chans=1)
    variant, report = bnprobe.make_variant(model, "identity")
    bnprobe.train_model(variant, data.train, data.test, config=bnprobe.TrainConfig(epochs=1))
    captured = bnprobe.capture(variant, data.train, samples=300, probes=probes, variant="identity")
    outcome = bnprobe.run_probes(captured, probes)   # pool=bnprobe.ProbePool(8): in parallel

or all at once with :func:`run_study` (your own loaders: ``bnprobe.Dataset.from_loaders``), then
``bnprobe.render(results)`` in the terminal and ``bnprobe.write_outputs(results, out)`` on disk.
"""

from importlib.metadata import version as _package_version

from bnprobe._lazy import attach

__version__ = _package_version("bnprobe")

__getattr__, __dir__, __all__ = attach(__name__, {
    "bnprobe.capture": ["CaptureResult", "CaptureWarning", "capture"],
    "bnprobe.data": ["Dataset", "Split", "list_datasets", "load_dataset", "register_dataset"],
    "bnprobe.errors": ["BnprobeError", "NoBatchNormError", "UnknownNameError"],
    "bnprobe.models": ["create_model", "list_models", "register_model"],
    "bnprobe.probes": [
        "LayerData", "Probe", "ProbeContext", "StreamingProbe", "build_probes", "get_probe", "list_probes",
        "register_probe",
    ],
    "bnprobe.probes.pool": ["ProbePool"],
    "bnprobe.probes.runner": [
        "ProbeFailedError", "ProbeFailureWarning", "ProbeOutcome", "run_probes", "start_probes",
    ],
    "bnprobe.report": ["Comparison", "Results", "RunResult", "ablation_curves", "compare", "heatmap", "plot", "render",
                       "write_outputs"],
    "bnprobe.study": ["ActivationRun", "StudyConfig", "load_run", "merge_studies", "probe_activations", "reprobe_study",
                      "run_study"],
    "bnprobe.surgery": [
        "SwapReport", "list_targets", "make_variant", "register_skipinit", "register_target", "swap_norms",
    ],
    "bnprobe.train": ["TrainConfig", "TrainResult", "evaluate", "train_model"],
})
