"""The results of a study, and their file formats.

``results.json`` (schema version :data:`SCHEMA_VERSION`, documented in ``docs/results.md``)::

    {"schema_version": 1, "model": ..., "dataset": ..., "config": {...},
     "layers": [layer names in forward order],
     "runs": [{"variant", "seed", "train_accuracy", "test_accuracy", "final_loss", "test_loss",
               "epochs_run", "diverged_at_epoch", "swap": {...},
               "probes": {PROBE: {LAYER: {METRIC: number or null}}},
               "failures": [{"probe", "layer", "error"}]}]}

Every file is written atomically (a temporary file in the same folder, then a rename), so an
interrupted run never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bnprobe.errors import BnprobeError

SCHEMA_VERSION = 1


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

    @property
    def probe_keys(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.runs for k in r.probes))

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
                   runs=[RunResult(**r) for r in data.get("runs", [])], layers=data.get("layers", []))

    def save(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/results.json`` atomically and return its path."""
        path = Path(out_dir) / "results.json"
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """Read a ``results.json`` (or the study folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise BnprobeError(f"no results at {path}; give a study folder written by `bnprobe run`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BnprobeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
