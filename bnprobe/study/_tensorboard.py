"""A study logged to TensorBoard, as it runs (:class:`TensorBoardListener`; ``bnprobe run --log tensorboard:DIR``).

TensorBoard rather than MLflow: it needs no server or database, only a folder of event files beside
the study, it is what PyTorch ships a writer for (``torch.utils.tensorboard``), and a run per folder
is how it compares runs.  Each run of the study -- a variant under a seed -- is one TensorBoard run,
``DIR/<variant>-seed<k>``, so the dashboard lines them up:

* ``train/loss``, ``train/accuracy`` (train mode, over the epoch's batches), ``test/accuracy`` (eval
  mode) and ``lr``, per epoch;
* once the run is probed, ``<probe>/<metric>`` per layer, the step being the layer's depth (its index
  in the captured order), so a metric's chart is its depth profile; the layer names are logged as
  text under ``layers``;
* the run's own numbers (``run/train_accuracy``, ``run/test_accuracy``, ...) once, at step 0.

Needs the ``tensorboard`` extra (``pip install 'bnprobe[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path

from bnprobe._common import MODEL_SCOPE_LAYER, optional_import
from bnprobe.report._results import RUN_PROBE, RunResult
from bnprobe.study._events import RunTimings, StudyListener
from bnprobe.train._state import run_stem

EPOCH_SCALARS = {"loss": "train/loss", "accuracy": "train/accuracy", "test_accuracy": "test/accuracy", "lr": "lr"}
"""Per-epoch number (:data:`bnprobe.report._results.HISTORY_METRICS`) -> its TensorBoard tag."""


class TensorBoardListener(StudyListener):
    """Writes every run's training curve and probe numbers to TensorBoard event files under ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        optional_import("tensorboard", extra="tensorboard", needed_by="logging to TensorBoard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self._writers: dict[tuple[str, int], SummaryWriter] = {}
        self._logged: dict[tuple[str, int], set[tuple[str, int]]] = {}
        """Per run, the (tag, epoch) pairs already written."""

    def _writer(self, variant: str, seed: int):
        if (variant, seed) not in self._writers:
            self._writers[(variant, seed)] = self._writer_class(str(self.log_dir / run_stem(variant, seed)))
        return self._writers[(variant, seed)]

    def epoch_done(self, variant: str, seed: int, epoch: int, metrics: dict) -> None:
        self._epoch(variant, seed, epoch, metrics)

    def _epoch(self, variant: str, seed: int, epoch: int, metrics: dict) -> None:
        writer, logged = self._writer(variant, seed), self._logged.setdefault((variant, seed), set())
        for name, tag in EPOCH_SCALARS.items():
            if metrics.get(name) is not None and (tag, epoch) not in logged:
                writer.add_scalar(tag, metrics[name], epoch)
                logged.add((tag, epoch))

    def run_finished(self, run: RunResult, timings: RunTimings) -> None:
        for record in run.history:  # the last epoch's test accuracy is measured after its epoch_done
            self._epoch(run.variant, run.seed, record["epoch"], record)
        writer = self._writer(run.variant, run.seed)
        layers: list[str] = []
        for probe, by_layer in run.numbers().items():
            for layer, metrics in by_layer.items():
                if layer == MODEL_SCOPE_LAYER:
                    step, prefix = 0, "run" if probe == RUN_PROBE else probe
                else:
                    layers += [layer] if layer not in layers else []
                    step, prefix = layers.index(layer), probe
                for metric, value in metrics.items():
                    if value is not None:
                        writer.add_scalar(f"{prefix}/{metric}", value, step)
        if layers:
            writer.add_text("layers", "  \n".join(f"{k}: {name}" for k, name in enumerate(layers)), 0)
        writer.close()
        del self._writers[(run.variant, run.seed)], self._logged[(run.variant, run.seed)]
