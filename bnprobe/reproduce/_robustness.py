"""Robustness of a reproduction's verdicts: the same trained runs, clustered under other HDBSCAN settings.

The clustering verdict rests on one HDBSCAN setting (the preset's: ``dims='auto'``, i.e. a 50-dimension
PCA, and ``min_cluster_size=10``).  :func:`robustness` re-probes the finished runs of a reproduction
from their kept final weights -- nothing is retrained -- with the study's ``hdbscan`` probe under every
setting of a small grid (:data:`DEFAULT_GRID`: PCA dimensions 20/50/100 x ``min_cluster_size``
10/50), runs :func:`bnprobe.reproduce._presets.assess` on each, and counts in how many settings each verdict
holds.  Only the ``hdbscan`` probe is run again; every other number (sparsity, accuracy) is the study's.

Each run's activations are captured once and every grid probe runs on that one capture
(:func:`bnprobe.study.reprobe_study` with all of them).  The setting the study itself used is not
computed again: its numbers are the study's own (re-probing the same weights on the same samples
gives the same numbers).

Nothing the study wrote changes: the re-probed runs, with every grid probe's numbers filed under its
own key (``hdbscan(dims=20)``...), go to ``OUT/robustness/results.json``, and the outcome to
``OUT/robustness.json`` (:meth:`RobustnessResult.to_dict`).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnprobe._common import write_atomic
from bnprobe._hints import option, setting
from bnprobe.errors import BnprobeError
from bnprobe.probes import Probe, build_probes, get_probe, parse_probe_spec
from bnprobe.report._results import Results
from bnprobe.reproduce._presets import VERDICT_LABELS, PresetStudy, assess, study_inputs
from bnprobe.reproduce._verdict import Verdict
from bnprobe.study import StudyListener, reprobe_study

CLUSTERING_PROBE = "hdbscan"
"""The probe whose settings the grid varies (the one the clustering verdict reads)."""
DEFAULT_GRID: dict[str, tuple[Any, ...]] = {"dims": (20, 50, 100), "min_cluster_size": (10, 50)}
"""PCA dimensions x ``min_cluster_size``: six settings, the preset's own (50, 10) among them."""
ROBUSTNESS_DIR = "robustness"
"""Folder of the study's output folder that holds the re-probed ``results.json``."""
ROBUSTNESS_FILE = "robustness.json"
"""File of the study's output folder that holds :meth:`RobustnessResult.to_dict`."""


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: its values, the probe key its numbers are filed under, and the verdicts.

    ``study``: this is the setting the study's own probe ran with, so its numbers are the study's.
    """

    params: dict[str, Any]
    probe: str
    study: bool
    verdicts: list[Verdict]

    def to_dict(self) -> dict:
        return {"params": self.params, "probe": self.probe, "study_setting": self.study,
                "verdicts": [{**v.to_dict(), "verdict": VERDICT_LABELS[v.holds]} for v in self.verdicts]}


@dataclass(frozen=True)
class RobustnessResult:
    """The verdicts of a reproduction under every setting of a grid (:func:`robustness`).

    ``probe``: the key of the study's clustering probe, whose numbers each setting's replace.
    """

    probe: str
    grid: dict[str, list[Any]]
    settings: list[Setting]

    def findings(self) -> list[str]:
        """The verdicts' findings, in :func:`bnprobe.reproduce._presets.assess`'s order."""
        return [v.finding for v in self.settings[0].verdicts] if self.settings else []

    def counts(self) -> list[dict[str, int]]:
        """Per verdict (in order), how many settings give each outcome (``HOLDS``...); each sums to the settings."""
        return [{label: sum(VERDICT_LABELS[s.verdicts[i].holds] == label for s in self.settings)
                 for label in VERDICT_LABELS.values()} for i in range(len(self.findings()))]

    def to_dict(self) -> dict:
        """What ``robustness.json`` holds (and ``bnprobe reproduce --robustness --json`` prints)."""
        return {"probe": self.probe, "grid": self.grid, "results": f"{ROBUSTNESS_DIR}/results.json",
                "settings": [s.to_dict() for s in self.settings],
                "verdicts": [{"finding": finding, **counts, "settings": len(self.settings)}
                             for finding, counts in zip(self.findings(), self.counts(), strict=True)]}


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``"dims=[20,50,100], min_cluster_size=[10,50]"`` -> ``{"dims": [20, 50, 100], ...}`` (probe-spec values)."""
    try:
        _, params = parse_probe_spec(f"grid({text})")
    except BnprobeError:
        params = {}
    if not params:
        raise BnprobeError(f"cannot read robustness grid {text!r}; write PARAM=[VALUE,...], e.g. "
                           "dims=[20,50,100],min_cluster_size=[10,50]")
    return {name: list(values) if isinstance(values, list | tuple) else [values] for name, values in params.items()}


def clustering_probe(study: PresetStudy) -> tuple[Probe, bool]:
    """The study's ``hdbscan`` probe (the one :func:`bnprobe.reproduce._presets.assess` reads) and whether the study
    ran it; the default one when it did not."""
    probe = next((p for p in build_probes(study.config.probes) if p.name == CLUSTERING_PROBE), None)
    return (probe, True) if probe is not None else (get_probe(CLUSTERING_PROBE), False)


def grid_probes(study: PresetStudy, grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], Probe]]:
    """Every setting of ``grid`` with the study's clustering probe under it, in grid order (the last
    parameter varying fastest); a one-line error on an unknown parameter, a bad value or a repeated setting."""
    base, _ = clustering_probe(study)
    names = base.param_names()
    unknown = [name for name in grid if name not in names]
    if not grid or unknown:
        what = f"{unknown[0]} is no {CLUSTERING_PROBE} parameter" if unknown else "the robustness grid is empty"
        raise BnprobeError(f"{what}; grid parameters: {', '.join(names)}")
    empty = [name for name, values in grid.items() if not len(values)]
    if empty:
        raise BnprobeError(f"robustness grid: {empty[0]} has no values; give at least one")
    cells = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        probe = get_probe(CLUSTERING_PROBE, **{**base.get_params(), **params})
        twin = next((p for p, other in cells if _settings(other) == _settings(probe)), None)
        if twin is not None:
            raise BnprobeError(f"robustness grid: {_label(twin)} and {_label(params)} are the same setting; "
                               "give each once")
        cells.append((params, probe))
    return cells


def check_robustness(study: PresetStudy, grid: Mapping[str, Sequence[Any]]) -> None:
    """Fail in one line, before the study trains, when :func:`robustness` could not run after it: a bad
    ``grid`` (:func:`grid_probes`), or a study that keeps no weights to re-probe (``checkpoints="none"``)."""
    grid_probes(study, grid)
    if study.config.checkpoints == "none":
        raise BnprobeError(f"{setting('robustness')} re-probes the runs' kept final weights, which "
                           f"{option('checkpoints', 'none')} removes; keep them with {option('checkpoints', 'final')} "
                           "(the default)")


def robustness(study: PresetStudy, out: str | Path, *, grid: Mapping[str, Sequence[Any]] = DEFAULT_GRID,
               listener: StudyListener | None = None) -> RobustnessResult:
    """Re-probe the finished reproduction of ``study`` in ``out`` under every setting of ``grid``.

    Trains nothing and leaves ``out/results.json`` as it is (module docstring); writes
    ``out/robustness/results.json`` and ``out/robustness.json``.  The study needs its kept final
    weights (``--checkpoints final``, the default) and every run finished.
    """
    out_dir = Path(out)
    results = Results.load(out_dir)
    base, ran = clustering_probe(study)
    cells = grid_probes(study, grid)
    own = {probe.key for _, probe in cells if ran and _settings(probe) == _settings(base)}
    pending = [probe.key for _, probe in cells if probe.key not in own]
    if pending:
        dataset, model = study_inputs(study)
        config = study.config
        results = reprobe_study(out_dir, pending, model=model, dataset=dataset, device=config.device,
                                data_root=config.data_root, probe_workers=config.probe_workers, listener=listener,
                                save_to=out_dir / ROBUSTNESS_DIR)
    settings = []
    for params, probe in cells:
        source = base.key if probe.key in own else probe.key
        verdicts = assess(study, _as_study_probe(results, source, base.key)).verdicts
        settings.append(Setting(params, source, probe.key in own, verdicts))
    outcome = RobustnessResult(base.key, {name: list(values) for name, values in grid.items()}, settings)
    write_atomic(out_dir / ROBUSTNESS_FILE, json.dumps(outcome.to_dict(), indent=2, allow_nan=False))
    return outcome


def _settings(probe: Probe) -> dict[str, Any]:
    """What an ``hdbscan`` probe computes with: its parameters, ``dims`` as the PCA dimensions it stands for."""
    return {**probe.get_params(), "dims": probe.pca_dims}


def _label(params: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value!r}" for name, value in params.items())


def _as_study_probe(results: Results, source: str, target: str) -> Results:
    """A copy of ``results`` whose ``target`` probe numbers and failures are ``source``'s (the study's own
    when they are the same key), so that :func:`bnprobe.reproduce._presets.assess` reads ``source``'s."""
    if source == target:
        return results
    moved = copy.deepcopy(results)
    for run in moved.runs:
        run.probes.pop(target, None)
        if source in run.probes:
            run.probes[target] = run.probes.pop(source)
        run.failures = [{**f, "probe": target} if f.get("probe") == source else f
                        for f in run.failures if f.get("probe") != target]
    return moved
