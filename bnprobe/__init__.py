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

from bnprobe.capture import CaptureResult, CaptureWarning, capture
from bnprobe.data import Dataset, Split, list_datasets, load_dataset, register_dataset
from bnprobe.errors import BnprobeError, NoBatchNormError, UnknownNameError
from bnprobe.models import create_model, list_models, register_model
from bnprobe.probes import (
    LayerData,
    Probe,
    ProbeContext,
    StreamingProbe,
    build_probes,
    get_probe,
    list_probes,
    register_probe,
)
from bnprobe.probes.pool import ProbePool
from bnprobe.probes.runner import ProbeFailedError, ProbeFailureWarning, ProbeOutcome, run_probes, start_probes
from bnprobe.report import Results, RunResult, render, write_outputs
from bnprobe.study import StudyConfig, reprobe_study, run_study
from bnprobe.surgery import SwapReport, list_targets, make_variant, register_skipinit, register_target, swap_norms
from bnprobe.train import TrainConfig, TrainResult, evaluate, train_model

__version__ = _package_version("bnprobe")

__all__ = [
    "BnprobeError",
    "CaptureResult",
    "CaptureWarning",
    "Dataset",
    "LayerData",
    "NoBatchNormError",
    "Probe",
    "ProbeContext",
    "ProbeFailedError",
    "ProbeFailureWarning",
    "ProbeOutcome",
    "ProbePool",
    "Results",
    "RunResult",
    "Split",
    "StreamingProbe",
    "StudyConfig",
    "SwapReport",
    "TrainConfig",
    "TrainResult",
    "UnknownNameError",
    "build_probes",
    "capture",
    "create_model",
    "evaluate",
    "get_probe",
    "list_datasets",
    "list_models",
    "list_probes",
    "list_targets",
    "load_dataset",
    "make_variant",
    "register_model",
    "register_dataset",
    "register_probe",
    "register_skipinit",
    "register_target",
    "render",
    "run_probes",
    "reprobe_study",
    "run_study",
    "start_probes",
    "swap_norms",
    "train_model",
    "write_outputs",
]
