"""The results of a study, and their file formats.

``results.json`` (schema version :data:`SCHEMA_VERSION`, documented in ``docs/results.md``)::

    {"schema_version": 1, "model": ..., "dataset": ..., "config": {...},
     "layers": [layer names in forward order],
     "runs": [{"variant", "seed", "train_accuracy", "test_accuracy", "final_loss", "test_loss",
               "epochs_run", "diverged_at_epoch", "swap": {...},
               "probes": {PROBE: {LAYER: {METRIC: number or null}}},
               "failures": [{"probe", "layer", "error"}],
               "history": [{"epoch", "loss", "accuracy", "test_accuracy", "lr"}],
               "flags": [{"name", "message"}],
               "train_mode_test_accuracy", "recalibrated_bn",
               "notes": {PROBE: {LAYER: {NAME: text}}}}]}

``results.csv`` holds the same numbers in tidy long form, one number a row, for pandas or a
spreadsheet: ``variant, seed, probe, layer, metric, value`` (an empty value is a null).  Each run's own
numbers (accuracies, losses, epochs) are filed under the pseudo-probe :data:`RUN_PROBE` at layer
``model``, so one ``groupby`` reaches everything.  The probes' notes (sparsity's zero test per layer)
are words, not numbers, and stay in ``results.json``: a text in ``value`` would make the column no
longer numeric for every reader.  ``history.csv`` is each run's per-epoch history
in the same long form: ``variant, seed, epoch, metric, value`` (:data:`HISTORY_METRICS`).

Every file is written atomically (a temporary file in the same folder, then a rename), so an
interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bnprobe._common import MODEL_SCOPE_LAYER, default_mode, finite_or_none, optional_import, write_atomic
from bnprobe._seeds import shard_seeds
from bnprobe.errors import BnprobeError

if TYPE_CHECKING:
    import pandas

SCHEMA_VERSION = 1
CSV_COLUMNS = ("variant", "seed", "probe", "layer", "metric", "value")
FRAME_COLUMNS = ("model", "dataset", *CSV_COLUMNS)
"""The columns of :meth:`Results.to_frame`: the CSV's, with the study's model and dataset first, so that
the frames of several studies concatenate."""
GIVEN_ACTIVATIONS = "probe_activations"
"""``config["source"]`` of results whose runs are activations the user gave (:func:`bnprobe.probe_activations`):
nothing was trained, so the runs have no training numbers."""
RUN_PROBE = "run"
"""Pseudo-probe under which the tidy CSV and the report file a run's own numbers, at layer ``model``."""
RUN_METRICS = ("train_accuracy", "test_accuracy", "final_loss", "test_loss", "epochs_run", "diverged_at_epoch",
               "train_mode_test_accuracy")
HISTORY_COLUMNS = ("variant", "seed", "epoch", "metric", "value")
HISTORY_METRICS = ("loss", "accuracy", "test_accuracy", "lr")
"""Per-epoch numbers: train-mode loss and accuracy over the epoch's batches, test accuracy after the
epoch (eval mode), and the learning rate of the epoch's last step (:mod:`bnprobe.train._loop`)."""


@dataclass
class RunResult:
    """One trained variant under one seed, with its probe numbers."""

    variant: str
    seed: int
    train_accuracy: float
    test_accuracy: float | None
    final_loss: float | None
    test_loss: float | None = None
    epochs_run: int = 0
    diverged_at_epoch: int | None = None
    swap: dict = field(default_factory=dict)
    probes: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    """Per epoch: ``{"epoch", "loss", "accuracy", "test_accuracy", "lr"}`` (:data:`HISTORY_METRICS`)."""
    flags: list[dict] = field(default_factory=list)
    """Warnings about the run, ``{"name", "message"}`` (:mod:`bnprobe.train._flags`), e.g. ``at_chance``."""
    train_mode_test_accuracy: float | None = None
    """Test accuracy with BatchNorm on batch statistics (:attr:`bnprobe.train.TrainResult.train_mode_test_accuracy`);
    None without BatchNorm, and in results written before it was measured."""
    recalibrated_bn: bool = False
    """Whether the BatchNorm running statistics were recomputed after training (``--recalibrate-bn``)."""
    notes: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """How the probes measured each layer, in words, ``{probe: {layer: {name: text}}}`` (:meth:`bnprobe.Probe.notes`):
    e.g. ``{"sparsity": {"blocks.0.act": {"zero_test": "a <= 0 (silu)"}}}``."""
    sample_sets: list[dict[str, dict[str, dict[str, float | None]]]] = field(default_factory=list)
    """Each probed sample set's numbers, in the shape of :attr:`probes`, when the run was probed on several
    (``sample_sets`` >= 2; :attr:`probes` then holds their means); empty otherwise."""

    def numbers(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """Every number of the run in the shape of :attr:`probes`, its own under :data:`RUN_PROBE`.

        One lookup path for accuracies and probe metrics alike, so the report and the CSV treat
        them the same way.
        """
        own = {metric: getattr(self, metric) for metric in RUN_METRICS}
        return {RUN_PROBE: {MODEL_SCOPE_LAYER: own}, **self.probes}


@dataclass
class Results:
    """A whole study: which model, which data, how it was configured, and every run."""

    model: str
    dataset: str
    config: dict
    runs: list[RunResult] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    def expected_runs(self) -> list[tuple[str, int]]:
        """``(variant, seed)`` of every run the config asks for: ``variants`` × ``seeds`` from ``first_seed``
        (only its part of them in a ``shard``), by seed, then variant.  Empty for results whose config
        names no seeds (activations that were given)."""
        variants, count, first = self.config.get("variants"), self.config.get("seeds"), self.config.get("first_seed", 0)
        if not variants or not all(isinstance(n, int) and not isinstance(n, bool) for n in (count, first)):
            return []
        seeds = list(range(first, first + count))
        if self.config.get("shard"):
            try:
                seeds = shard_seeds(seeds, str(self.config["shard"]))
            except BnprobeError:  # a shard no study could have run: nothing is known to be missing
                return []
        return [(variant, seed) for seed in seeds for variant in variants]

    def missing_runs(self) -> dict[str, list[int]]:
        """``{variant: seeds}`` of the :meth:`expected_runs` that :attr:`runs` lacks: those an interrupted
        study (or one still running) has not filed yet, and which resuming it trains; empty when all
        are here."""
        held, expected = {(run.variant, run.seed) for run in self.runs}, self.expected_runs()
        missing: dict[str, list[int]] = {variant: [] for variant, _ in expected}  # the config's order
        for variant, seed in expected:
            if (variant, seed) not in held:
                missing[variant].append(seed)
        return {variant: seeds for variant, seeds in missing.items() if seeds}

    @property
    def mode(self) -> str | None:
        """How the runs came by their weights (:data:`bnprobe._common.STUDY_MODES`); None for results of
        activations that were given (:func:`bnprobe.probe_activations`)."""
        if self.config.get("source") == GIVEN_ACTIVATIONS:
            return None
        return self.config.get("mode") or default_mode(self.config)

    @property
    def probe_keys(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.runs for k in r.probes))

    def to_frame(self) -> pandas.DataFrame:
        """Every number as a tidy pandas DataFrame: one row per run, probe, layer and metric, under
        :data:`FRAME_COLUMNS` (``value`` NaN where the number is null).  Needs the ``pandas`` extra."""
        pd = optional_import("pandas", extra="pandas", needed_by="Results.to_frame()")
        rows = [(self.model, self.dataset, run.variant, run.seed, probe, layer, metric,
                 math.nan if value is None else float(value))
                for run in self.runs for probe, layers in run.numbers().items()
                for layer, metrics in layers.items() for metric, value in metrics.items()]
        frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
        return frame.astype({"seed": "int64", "value": "float64"})

    def _repr_html_(self) -> str:
        """The terminal report (:func:`bnprobe.render`) as HTML, for Jupyter."""
        from bnprobe.report._terminal import recorded_html, render

        return recorded_html(lambda console: render(self, console))

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "model": self.model, "dataset": self.dataset,
                "config": self.config, "layers": self.layers, "runs": [asdict(r) for r in self.runs]}

    @classmethod
    def from_dict(cls, data: dict) -> Results:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BnprobeError(f"results schema version {version!r} is not {SCHEMA_VERSION}; "
                               "re-run the study with this bnprobe version")
        return cls(model=data["model"], dataset=data["dataset"], config=data.get("config", {}),
                   runs=[_run_from_dict(r) for r in data.get("runs", [])], layers=data.get("layers", []))

    def save(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/results.json`` atomically and return its path."""
        return _saved(Path(out_dir) / "results.json", json.dumps(self.to_dict(), indent=2, allow_nan=False))

    def to_csv(self) -> str:
        """The tidy long table (module docstring): one row per run, probe, layer and metric."""
        return _csv_text(CSV_COLUMNS, ((run.variant, run.seed, probe, layer, metric, value)
                                       for run in self.runs for probe, layers in run.numbers().items()
                                       for layer, metrics in layers.items() for metric, value in metrics.items()))

    def save_csv(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/results.csv`` atomically and return its path."""
        return _saved(Path(out_dir) / "results.csv", self.to_csv())

    def history_csv(self) -> str:
        """Every run's per-epoch history in long form under :data:`HISTORY_COLUMNS` (empty value: null)."""
        return _csv_text(HISTORY_COLUMNS, ((run.variant, run.seed, record["epoch"], metric, record.get(metric))
                                           for run in self.runs for record in run.history
                                           for metric in HISTORY_METRICS))

    def save_history_csv(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/history.csv`` atomically and return its path."""
        return _saved(Path(out_dir) / "history.csv", self.history_csv())

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Read a ``results.json`` (or the study folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise BnprobeError(f"no results at {path}; give a study folder written by `bnprobe run`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise BnprobeError(f"{path} is not a text file; give the results.json written by `bnprobe run`") from None
        except json.JSONDecodeError as exc:
            raise BnprobeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise BnprobeError(f"{path} holds a JSON {type(data).__name__}, not a study's results; "
                               "give the results.json written by `bnprobe run`")
        try:
            return cls.from_dict(data)
        except BnprobeError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BnprobeError(f"{path} is not a bnprobe results file ({type(exc).__name__}: {exc}); "
                               "re-run the study or restore the file") from None


def _run_from_dict(data: dict) -> RunResult:
    """A saved run; ValueError when one of its numbers is not a number (a hand-edited file)."""
    run = RunResult(**data)
    for probe, layers in run.numbers().items():
        for layer, metrics in layers.items():
            for metric, value in metrics.items():
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ValueError(f"{run.variant} seed {run.seed}: {probe}/{layer}/{metric} is {value!r}, "
                                     "not a number")
    for probe, layers in run.notes.items():
        for layer, notes in layers.items():
            for name, text in notes.items():
                if not isinstance(text, str):
                    raise ValueError(f"{run.variant} seed {run.seed}: note {probe}/{layer}/{name} is {text!r}, "
                                     "not text")
    return run


def finite_history(history: list[dict]) -> list[dict]:
    """``history`` with every non-finite float (a diverged epoch's loss) as None, for JSON."""
    return [{key: finite_or_none(value) if isinstance(value, float) else value for key, value in record.items()}
            for record in history]


def _csv_text(columns: tuple[str, ...], rows: Iterable[tuple]) -> str:
    """A CSV table with a header row; the last value of a row is written empty when it is None (null)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for *keys, value in rows:
        writer.writerow((*keys, "" if value is None else value))
    return buffer.getvalue()


def _saved(path: Path, text: str) -> Path:
    write_atomic(path, text)
    return path
