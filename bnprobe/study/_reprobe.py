"""A finished study reopened from its checkpoints, without retraining: probed again (:func:`reprobe_study`),
or one run's trained model handed to the user (:func:`load_run`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from bnprobe._common import INIT_VARIANT, REFERENCE_VARIANT
from bnprobe._hints import option
from bnprobe.capture._capture import CaptureResult
from bnprobe.data._loaders import Dataset
from bnprobe.errors import BnprobeError
from bnprobe.probes import ProbePool, build_probes
from bnprobe.report import write_outputs
from bnprobe.report._results import Results, RunResult
from bnprobe.study._config import StudyConfig
from bnprobe.study._events import RunTimings, StudyListener
from bnprobe.study._run import ModelSource, Study, check_dataset, prepare_dataset, probe_pool
from bnprobe.study._versions import VERSIONS_FIELD, probe_versions, saved_versions
from bnprobe.train._bnstats import batchnorm_layers
from bnprobe.train._distributed import current_world
from bnprobe.train._flags import CHECKS, run_flags
from bnprobe.train._loop import (
    evaluate,
    resolve_device,
)


def reprobe_study(out: str | Path, probes: Sequence[str], *, model: ModelSource | None = None,
                  dataset: Dataset | None = None, device: str = "auto", data_root: str | None = None,
                  probe_workers: int | None = None, listener: StudyListener | None = None,
                  save_to: str | Path | None = None) -> Results:
    """Probe the finished study in ``out`` again from its checkpoints, without retraining.

    Each run's final weights are loaded, its activations captured again on the same samples, and
    ``probes`` run on them; ``results.json`` is updated in place after every run: those probes'
    numbers (and failures) are added or replaced, everything else -- training numbers, other probes --
    is kept.  Every run's checkpoint is loaded once first, so one that is missing, unreadable or of
    another model fails before ``results.json`` changes.  Diverged runs are skipped.  A run saved
    before the batch-statistics test accuracy was measured gets it now, from the same weights, and
    its flags are raised again with it.  A study trained on a custom ``model`` or ``dataset`` needs
    them again here.  ``probe_workers`` is this machine's
    (:attr:`StudyConfig.probe_workers`), not the study's.  ``results.csv``, ``history.csv`` and
    ``plots/`` are then written again with the new numbers.  ``save_to``: the folder the updated
    ``results.json`` alone goes to instead (``out``'s own files are then left as they were).
    """
    listener = listener or StudyListener()
    out_dir, results, config = _reopen(out, model, dataset, ("probe", "reprobe_study"), probes=list(probes),
                                       device=device, probe_workers=probe_workers, data_root=data_root)
    resolved = resolve_device(device)
    data = (dataset if dataset is not None else prepare_dataset(config)).to(resolved)
    probe_list = build_probes(config.probes)
    with probe_pool(config, probe_list, current_world()) as pool:
        study = Study(config, model if model is not None else config.model, data, probe_list, resolved, out_dir,
                       listener, pool)
        for run in results.runs:  # every checkpoint loads and fits before results.json is touched
            if run.diverged_at_epoch is None:
                study.trained(run.variant, run.seed)
        _reprobe_runs(study, results, Path(save_to) if save_to is not None else out_dir)
    if save_to is None:
        write_outputs(results, out_dir)
    return results


def load_run(out: str | Path, variant: str = REFERENCE_VARIANT, seed: int = 0, *, model: ModelSource | None = None,
             dataset: Dataset | None = None, device: str = "cpu", data_root: str | None = None) -> nn.Module:
    """The trained model of one run of the study in ``out``: ``variant``'s architecture (BatchNorm swapped
    as the study swapped it) with the run's final weights, in eval mode on ``device``.

    A plain ``nn.Module``, ready for captum, nnsight, TorchLens or a hook of your own.  The study's
    dataset is read to build the model for its classes and channels; a study run on a custom ``model``
    or ``dataset`` needs them again here.
    """
    out_dir, results, config = _reopen(out, model, dataset, ("load", "load_run"), device=device, data_root=data_root)
    if not any(run.variant == variant and run.seed == seed for run in results.runs):
        runs = ", ".join(f"{run.variant} seed {run.seed}" for run in results.runs) or "none"
        raise BnprobeError(f"the study in {out_dir} has no finished run {variant} seed {seed}; its runs: {runs}")
    data = dataset if dataset is not None else prepare_dataset(config)
    study = Study(config, model if model is not None else config.model, data, [], resolve_device(device), out_dir,
                  StudyListener(), ProbePool(0))
    return study.trained(variant, seed).eval()


def _reopen(out: str | Path, model: ModelSource | None, dataset: Dataset | None, doing: tuple[str, str],
            **settings: Any) -> tuple[Path, Results, StudyConfig]:
    """The finished study in ``out``: its folder, results and config (``settings`` replacing the saved
    ones that say where it runs now), after checking that its weights were kept and that a custom model
    or dataset it was run on is given again.  ``doing``: what the caller does and its name, for the messages."""
    verb, caller = doing
    check_dataset(dataset)
    out_dir = Path(out)
    results = Results.load(out_dir)
    settings["data_root"] = settings.get("data_root") or results.config.get("data_root")
    config = StudyConfig.from_dict({**results.config, **settings})
    if results.config.get("checkpoints") == "none":
        raise BnprobeError(f"the study in {out_dir} kept no checkpoints ({option('checkpoints', 'none')}), so there "
                           f"are no weights to {verb}; run it again with {option('checkpoints', 'final')} "
                           "(the default)")
    for what, given in (("model", model), ("dataset", dataset)):
        if results.config.get(f"custom_{what}") and given is None:
            raise BnprobeError(f"the study in {out_dir} was run on a custom {what}; {verb} it from Python with "
                               f"{caller}(..., {what}=...)")
    return out_dir, results, config


def _reference_first(run: RunResult) -> tuple[int, bool]:
    """Runs by seed, each seed's ``bn`` run first: the reference that comparison probes read."""
    return run.seed, run.variant != REFERENCE_VARIANT


def _measure_batch_statistics(study: Study, run: RunResult, model: nn.Module) -> None:
    """Give ``run`` (saved without it) its batch-statistics test accuracy, measured on ``model`` (its
    weights) as training measures it, and raise its flags again; nothing for a model without BatchNorm."""
    if not batchnorm_layers(model) or not len(study.dataset.test):
        return
    train = study.config.train_for(run.variant)
    run.train_mode_test_accuracy = evaluate(model, study.dataset.test, device=study.device, batch_size=train.batch_size,
                                            precision=train.precision, batch_stats=True)[1]
    raised = run_flags(run, study.dataset, untrained=run.variant == INIT_VARIANT)
    run.flags = [f for f in run.flags if f["name"] not in CHECKS] + raised


def _reprobe_runs(study: Study, results: Results, save_to: Path) -> None:
    """Probe every finished run of ``results`` again, saving to ``save_to`` after each (the runs' layers
    in parallel)."""
    keys = {probe.key for probe in study.probes}
    results.config["probes"] = list(dict.fromkeys([*results.config.get("probes", []), *study.config.probes]))
    versions = {**saved_versions(results.config), **probe_versions(study.probes)}  # each run is measured again
    study.listener.study_started(len(results.runs))
    reference: CaptureResult | None = None
    seed: int | None = None
    for run in sorted(results.runs, key=_reference_first):  # saved in study order all the same
        timings = RunTimings()
        if run.seed != seed:  # a new seed: the previous one's reference and caches are done with
            seed, reference = run.seed, None
            study.clear_cache()
        if run.diverged_at_epoch is None:
            model = study.trained(run.variant, run.seed)
            if run.train_mode_test_accuracy is None:
                _measure_batch_statistics(study, run, model)
            pending, captured, timings = study.probe(model, run.variant, run.seed, reference)
            if run.variant == REFERENCE_VARIANT:
                reference = captured
            waiting = time.perf_counter()
            outcome = pending.result()
            timings = replace(timings, probe=timings.probe + time.perf_counter() - waiting)
            run.probes.update({key: layers for key, layers in outcome.values.items() if layers})  # failed: kept
            run.notes = {key: notes for key, notes in run.notes.items() if not outcome.values.get(key)} | outcome.notes
            run.failures = [f for f in run.failures if f["probe"] not in keys] + [f.to_dict() for f in outcome.failures]
            results.layers = results.layers or captured.names
        results.save(save_to)
        study.listener.run_finished(run, timings)
    results.config[VERSIONS_FIELD] = versions  # once every run has its new numbers, not before
    results.save(save_to)
    study.clear_cache()
