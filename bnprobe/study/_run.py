"""A study: variants x seeds -> train -> capture -> probes -> :class:`Results`.

For each seed the model is built once under that seed and every variant is made from a copy of it
(swap after init), so all variants of a seed start from the same conv/linear weights, train with the
same data order and augmentation, and are probed on the same training samples.  Hyperparameters are
the same for every variant unless ``overrides`` sets some of them (:data:`bnprobe.train.PER_VARIANT`)
for a variant.  The ``bn`` variant of a seed is the reference that comparison probes (e.g. CKA) read.

**The untrained reference** (``init``, :data:`bnprobe._common.INIT_VARIANT`).  A seed's ``init`` run is its
``bn`` model as made, with the starting weights every variant of the seed starts from, and goes through
the run as every other does with the training step left out (0 epochs, as in a ``probe-only`` study):
evaluated, checkpointed, captured in eval mode and probed -- so on the fused and the plain path, on
resume, on Ray and when probed again alike.  From a fresh initialisation its BatchNorm layers have
running statistics mean 0 and variance 1, so in eval mode each computes ``x / sqrt(1 + eps)``: nearly
the identity, where batch statistics would normalise; ``recalibrate_bn`` recomputes them over the
training split first, as for every run.  (In a ``fine-tune`` study ``init`` is the starting weights,
with their own statistics.)  From scratch its accuracy is at chance by design, so ``init`` is never
flagged ``at_chance`` (:func:`bnprobe.train._flags.run_flags`).

The dataset is loaded once and moved to the training device once; its augmentation policy
(:attr:`bnprobe.data.Dataset.augment`) is applied there unless ``augment`` is off.

**The output folder.**  ``results.json`` is rewritten atomically when the study starts and after
every run, and ``checkpoints/<variant>-seed<k>.pt`` after every epoch of every run
(:mod:`bnprobe.train._state`).  With ``resume=True`` a folder that already holds a study continues it:
the configuration must match (a one-line error names the first field that differs; ``device``,
``data_root``, ``max_memory`` and the other settings in :data:`MAY_CHANGE_ON_RESUME` may change, and
variants may be added after the saved ones, each with its own overrides), finished runs are kept as
they are, the interrupted run continues from its last epoch, and the
remaining runs train as usual.  Without ``resume`` a folder that holds a study is refused
(:mod:`bnprobe.study._dir`) unless ``overwrite=True``, which removes that study's files -- but only once
every variant has been made and captured on one sample, so a variant or ``layers`` the model cannot
take fails before a file there is replaced.  Once a run is filed its checkpoint is cut down to what
``checkpoints`` keeps (:data:`bnprobe.train.CHECKPOINT_MODES`): its final weights by default.
Capture caches live in ``cache/<variant>-seed<k>/`` and are removed when the seed is done.  Ctrl-C
raises :class:`bnprobe.errors.StudyInterrupted`, which names the runs already filed.

**Fused training** (:mod:`bnprobe.train._fused`).  With ``fuse`` on, the pending seeds of each variant are
trained together as one vmapped model before probing starts; each run keeps its seed, initial
weights, data order, hyperparameters and per-epoch checkpoint.  On CUDA the fused step is replayed
from a CUDA graph unless ``cuda_graph`` is off (:meth:`StudyListener.fused_steps` says how it ran).
A variant whose runs cannot be fused (one seed, agc, fp16, a model vmap cannot run, runs resumed at
different epochs...) trains its runs one after another as without fusion.  ``fuse=None`` (the
default) fuses on CUDA only: there a small model's step leaves the GPU idle, while on a CPU the
batched step does the same arithmetic no faster.  :meth:`StudyListener.training_planned` says which
path each variant took and why.

**BatchNorm statistics** (:mod:`bnprobe.train._bnstats`).  Every run of a model with BatchNorm also has its
test accuracy with batch statistics, and is flagged (:mod:`bnprobe.train._flags`) when its eval-mode accuracy
falls far below it.  ``recalibrate_bn`` recomputes each run's running statistics over the training
split after training -- on the fused path too, run by run -- so that evaluation, checkpoint and
capture all use them; it may not change on resume.

A run whose loss diverged keeps its training numbers and ``diverged_at_epoch`` but is not probed:
the activations of non-finite weights say nothing.  The study goes on with the next run.

:func:`bnprobe.study.reprobe_study` (``_reprobe``) probes a finished study again from its checkpoints,
without retraining.

Under torchrun (:mod:`bnprobe.train._distributed`) every process trains; only rank 0 probes and writes.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from bnprobe._common import INIT_VARIANT, REFERENCE_VARIANT, default_mode, finite_or_none
from bnprobe._hints import option, setting
from bnprobe.capture._capture import (
    CaptureResult,
    CaptureWarning,
    capture,
)
from bnprobe.data._augment import Augment
from bnprobe.data._loaders import Dataset, Split, adapt_channels, load_dataset, permuted_subset
from bnprobe.errors import BnprobeError, NoBatchNormError, StudyInterrupted
from bnprobe.models._factory import create_model, input_channels
from bnprobe.models._weights import load_checkpoint, load_state
from bnprobe.probes import PendingSets, Probe, build_probes
from bnprobe.probes.pool import ProbePool
from bnprobe.probes.runner import PendingOutcome, ProbeOutcome, start_probes
from bnprobe.report import write_outputs
from bnprobe.report._results import Results, RunResult, finite_history
from bnprobe.study._config import (
    ADDED_FIELDS,
    MAY_CHANGE_ON_RESUME,
    StudyConfig,
    renamed_config,
    run_key,
    split_run_key,
)
from bnprobe.study._dir import check_out_dir, remove_study, saved_runs
from bnprobe.study._events import RunTimings, StudyListener
from bnprobe.study._executor import parse_executor
from bnprobe.study._versions import VERSIONS_FIELD, check_same_versions, probe_versions
from bnprobe.surgery._batchnorm import has_batchnorm
from bnprobe.surgery._swap import SwapReport, make_variant
from bnprobe.train._distributed import World, process_group
from bnprobe.train._flags import run_flags
from bnprobe.train._fused import FusedRun, FusionUnavailable, fusion_blocker, train_fused
from bnprobe.train._loop import (
    TrainResult,
    check_last_batch,
    resolve_device,
    train_model,
)
from bnprobe.train._state import (
    CHECKPOINT_DIR,
    checkpoint_path,
    first_difference,
    keep_final_weights,
    load_train_state,
    run_stem,
)

PROBE_SAMPLE_SEED = 20250101
"""Seed of the permutation that picks the probed training samples (the same for every run)."""
ModelSource = str | nn.Module | Callable[[], nn.Module]


def build_seeded_model(source: ModelSource, seed: int, dataset: Dataset, *, pretrained: bool | str = False,
                       keep_weights: bool = False) -> nn.Module:
    """The model for ``seed``, built under ``torch.manual_seed(seed)``.

    A name goes through :func:`bnprobe.models.create_model` (with its published weights when
    ``pretrained`` asks); a callable is called; a module is copied, and every submodule with
    ``reset_parameters`` re-initialised unless ``keep_weights`` (a study that starts from its weights).
    """
    torch.manual_seed(seed)
    if isinstance(source, str):
        return create_model(source, num_classes=dataset.num_classes, in_chans=dataset.channels,
                            img_size=dataset.image_size, pretrained=pretrained)
    if pretrained:
        raise BnprobeError("pretrained loads the published weights of a model name; load your module's own "
                           "weights before passing it, with mode='fine-tune' or 'probe-only' to keep them")
    if isinstance(source, nn.Module):
        model = copy.deepcopy(source)
        if not keep_weights:
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return model
    return source()


def probe_subset(split: Split, samples: int) -> Split:
    """The first ``samples`` of a fixed permutation of ``split``: the same samples for every run."""
    return permuted_subset(split, min(samples, len(split)), PROBE_SAMPLE_SEED)


def seed_sample_sets(split: Split, samples: int, sets: int, seed: int) -> list[Split]:
    """Seed ``seed``'s ``sets`` disjoint sets of ``samples`` (``sets`` >= 2): blocks ``seed * sets`` on of
    the fixed permutation that :func:`probe_subset` reads, so no two seeds share a sample."""
    return [permuted_subset(split, samples, PROBE_SAMPLE_SEED, (seed * sets + k) * samples) for k in range(sets)]


class CaptureSets(list):
    """One run's captures, one per sample set (``sample_sets`` >= 2), read as the run's capture where
    only its layers matter."""

    @property
    def names(self) -> list[str]:
        """The captured layers (the same for every set)."""
        return self[0].names


def prepare_dataset(config: StudyConfig) -> Dataset:
    """Load the study's dataset with the channel count its model takes."""
    dataset = load_dataset(config.dataset, data_root=config.data_root)
    return adapt_channels(dataset, input_channels(config.model, dataset.channels))


class Study:
    """What the runs of one study share: the model source, the data, the probes, the output folder."""

    def __init__(self, config: StudyConfig, source: ModelSource, dataset: Dataset, probes: list[Probe],
                 device: torch.device, out_dir: Path | None, listener: StudyListener, pool: ProbePool) -> None:
        self.config, self.source, self.dataset, self.probes = config, source, dataset, probes
        self.device, self.out_dir, self.listener, self.pool = device, out_dir, listener, pool
        self.probe_split = probe_subset(dataset.train, config.samples)
        self._check_sample_sets()
        self.cache_root = out_dir / "cache" if out_dir is not None else None
        """Where the capture caches of the runs go (a Ray task keeps its own folder there)."""
        self._base: tuple[int, nn.Module] | None = None

    def _check_sample_sets(self) -> None:
        """``sample_sets`` >= 2 needs every seed's sets to be whole and disjoint: a one-line error otherwise."""
        config, size = self.config, len(self.dataset.train)
        needed = (max(config.seed_range) + 1) * config.sample_sets * config.samples
        if config.sample_sets > 1 and needed > size:
            raise BnprobeError(f"sample_sets={config.sample_sets} disjoint sets of {config.samples} samples for each "
                               f"seed up to {max(config.seed_range)} need {needed} training samples, and the split "
                               f"has {size}; probe fewer samples or fewer sets")

    def probe_sets(self, seed: int) -> list[Split]:
        """The samples ``seed``'s runs are probed on: the study's one set, or the seed's own sets
        (:func:`seed_sample_sets`) when ``sample_sets`` is 2 or more."""
        if self.config.sample_sets == 1:
            return [self.probe_split]
        return seed_sample_sets(self.dataset.train, self.config.samples, self.config.sample_sets, seed)

    def base(self, seed: int) -> nn.Module:
        """The model as initialised under ``seed`` (built once per seed; variants are copies)."""
        if self._base is None or self._base[0] != seed:
            model = build_seeded_model(self.source, seed, self.dataset, pretrained=self.config.pretrained,
                                       keep_weights=self.config.mode != "scratch")
            if self.config.init_weights:
                load_checkpoint(model, self.config.init_weights)
            self._base = (seed, model)
        return self._base[1]

    def variant(self, variant: str, seed: int) -> tuple[nn.Module, SwapReport]:
        """A fresh ``variant`` of the model initialised under ``seed`` (``init``: the ``bn`` model), with the
        run's own weights when the study was given them (``weights``)."""
        model, report = make_variant(self.base(seed), REFERENCE_VARIANT if variant == INIT_VARIANT else variant)
        path = self.config.weights.get(run_key(variant, seed))
        if path is not None:
            load_checkpoint(model, path)
        return model, report

    def trains(self, variant: str) -> bool:
        """Whether ``variant``'s runs are trained: not the untrained ``init`` reference, nor any run of a
        ``probe-only`` study; those are evaluated as they are."""
        return self.config.mode != "probe-only" and variant != INIT_VARIANT

    def epochs(self, variant: str) -> int:
        """How many epochs ``variant``'s runs train: none when they are not trained (:meth:`trains`)."""
        return self.config.train_for(variant).epochs if self.trains(variant) else 0

    def checkpoint(self, variant: str, seed: int) -> Path | None:
        return checkpoint_path(self.out_dir, variant, seed) if self.out_dir is not None else None

    def keep_checkpoint(self, variant: str, seed: int) -> None:
        """Once a run is filed: cut its checkpoint to the final weights, unless ``checkpoints`` is ``resume``."""
        path = self.checkpoint(variant, seed)
        if self.config.checkpoints != "resume" and path is not None and path.is_file():
            keep_final_weights(path)

    def drop_checkpoints(self) -> None:
        """Once the study is done, with ``checkpoints="none"``: remove its runs' checkpoints (and the
        folder, when nothing else is in it)."""
        if self.config.checkpoints != "none" or self.out_dir is None:
            return
        for variant in self.config.variants:
            for seed in self.config.run_seeds:
                self.checkpoint(variant, seed).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.out_dir / CHECKPOINT_DIR).rmdir()

    @property
    def augment(self) -> Augment | None:
        """The augmentation training applies: the dataset's policy, unless the study turned it off."""
        return self.dataset.augment if self.config.augment else None

    def on_step(self, variant: str, seed: int) -> Callable[[int, int, int], None]:
        """The per-step callback of one run: tell the listener."""
        return lambda step, steps, epoch: self.listener.training_step(variant, seed, step, steps, epoch)

    def on_epoch(self, variant: str, seed: int) -> Callable[[int, dict], None]:
        """The per-epoch callback of one run: tell the listener."""
        return lambda epoch, metrics: self.listener.epoch_done(variant, seed, epoch, metrics)

    def trained(self, variant: str, seed: int) -> nn.Module:
        """``variant`` under ``seed`` with the weights of its finished run's checkpoint."""
        path = self.checkpoint(variant, seed)
        if path is None:
            raise BnprobeError("a study without an output folder has no checkpoints to load")
        state = load_train_state(path)
        epochs = self.epochs(variant)
        if state["epoch"] < epochs and state["diverged_at_epoch"] is None:
            raise BnprobeError(f"{variant} seed {seed} stopped after epoch {state['epoch']} of {epochs}; "
                               f"finish the study with {option('resume')} first")
        model, _ = self.variant(variant, seed)
        load_state(model, state["model"], f"checkpoint {path} does not fit {variant}: {{why}}")
        return model.to(self.device)

    def cache_dir(self, variant: str, seed: int) -> Path | None:
        """Where the capture of one run keeps vectors that fit no memory budget."""
        return self.cache_root / run_stem(variant, seed) if self.cache_root is not None else None

    def capture(self, model: nn.Module, variant: str, seed: int) -> CaptureResult | CaptureSets:
        """The selected layers of ``model`` on the probed samples (streaming probes fed on the way): one
        capture, or one per sample set (:meth:`probe_sets`)."""
        sets = self.probe_sets(seed)
        captures = CaptureSets()
        on_batch = lambda n: self.listener.capture_batch(variant, seed, n)  # noqa: E731 - one callback, every set
        for k, samples in enumerate(sets):
            cache_dir = self.cache_dir(variant, seed)
            if cache_dir is not None and len(sets) > 1:
                cache_dir = cache_dir / f"set{k}"
            self.listener.capture_started(variant, seed, len(samples))
            captures.append(capture(model, samples, layers=self.config.layers, probes=self.probes,
                                    spatial=self.config.spatial, max_memory=self.config.max_memory,
                                    max_device_memory=self.config.max_device_memory, cache_dir=cache_dir,
                                    device=self.device, on_batch=on_batch, variant=variant, seed=seed))
        return captures[0] if len(captures) == 1 else captures

    def probe(self, model: nn.Module, variant: str, seed: int, reference: CaptureResult | CaptureSets | None,
              ) -> tuple[PendingOutcome | PendingSets, CaptureResult | CaptureSets, RunTimings]:
        """Capture ``model`` and start every probe on it, comparing with ``reference`` (the ``bn`` run's
        capture on the same sets) where asked; the timings hold the seconds of the capture and of
        starting the probes.  With several sample sets the outcome is their means (:func:`mean_over_sets`).
        Probes that score the model's predictions (ablation) do so on the test split.

        The CPU halves of split probes may still be running on the pool's workers when this returns.
        """
        started = time.perf_counter()
        captured = self.capture(model, variant, seed)
        captured_at = time.perf_counter()
        sets = captured if isinstance(captured, CaptureSets) else [captured]
        references = reference if isinstance(reference, CaptureSets) else [reference] * len(sets)
        steps = len(sets) * sum(1 if p.scope == "model" else len(sets[0]) for p in self.probes)
        self.listener.probing_started(variant, seed, steps)
        test = self.dataset.test
        pending = [start_probes(one, self.probes, reference=ref, pool=self.pool, on_failure="record",
                                on_step=lambda probe, layer: self.listener.probe_step(variant, seed, probe, layer),
                                held_out=(test.x, test.y))
                   for one, ref in zip(sets, references, strict=True)]
        timings = RunTimings(capture=captured_at - started, probe=time.perf_counter() - captured_at)
        return pending[0] if len(pending) == 1 else PendingSets(pending), captured, timings

    def clear_cache(self) -> None:
        """Remove the capture caches (once a seed's runs no longer need them).

        Only the study's own run folders go, and ``cache/`` itself once empty: a ``cache/`` that the
        user keeps in the output folder keeps its files.
        """
        if self.cache_root is None:
            return
        for variant in self.config.variants:
            for seed in self.config.run_seeds:
                shutil.rmtree(self.cache_dir(variant, seed), ignore_errors=True)
        for folder in (self.cache_root, self.out_dir / "cache"):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def check_variants(self) -> None:
        """Make every variant of seed 0's model and capture it on one sample, untrained.

        A variant the model cannot take (``groupnorm:7`` on 32 channels), a run's ``weights`` file that
        does not fit its variant, ``layers`` that select nothing, or a batch size whose last batch the
        model cannot train on (:func:`bnprobe.train.check_last_batch`) then fail now, before anything
        trains or a file in the output folder is replaced.
        """
        one = (self.probe_split.x[:1], self.probe_split.y[:1])
        for key in self.config.weights:  # every given file fits its swapped model, before anything runs
            self.variant(*split_run_key(key))
        for variant in self.config.variants:
            model, _ = self.variant(variant, self.config.run_seeds[0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CaptureWarning)  # the real capture says it
                capture(model, one, layers=self.config.layers, spatial=self.config.spatial, vectors=False,
                        device=self.device)  # first: a model that cannot take the data fails here, in one line
            check_last_batch(model, self.dataset.train, self.config.train_for(variant).batch_size, self.device)


def run_study(config: StudyConfig, *, out: str | Path | None = None, model: ModelSource | None = None,
              dataset: Dataset | None = None, listener: StudyListener | None = None,
              resume: bool = False, overwrite: bool = False) -> Results:
    """Run every variant under every seed, probe each run, and return (and save) the results.

    ``model`` and ``dataset`` override ``config.model`` / ``config.dataset`` with a user's own module
    (or factory) and data.  ``out`` is the study's folder, as ``bnprobe run`` writes it: ``results.json``
    after every run, checkpoints and capture caches on the way, and at the end ``results.csv``,
    ``history.csv`` and ``plots/`` (:func:`bnprobe.write_outputs`).
    A folder that holds a study is refused unless ``resume`` continues it or ``overwrite`` replaces it
    (see the module docstring).  Ctrl-C raises :class:`StudyInterrupted` naming the finished runs.
    """
    check_out_dir(out, resume=resume, overwrite=overwrite, reads=config.read_files)
    check_starting_weights(config, model)
    try:
        return _run_study(config, out, model, dataset, listener, resume, overwrite)
    except StudyInterrupted:
        raise
    except KeyboardInterrupt as exc:  # before the first run was filed: a resumed study's saved runs are all
        raise StudyInterrupted(saved_runs(out) if resume else []) from exc


def _run_study(config: StudyConfig, out: str | Path | None, model: ModelSource | None, dataset: Dataset | None,
               listener: StudyListener | None, resume: bool, overwrite: bool) -> Results:
    started = time.perf_counter()
    listener = listener or StudyListener()
    check_dataset(dataset)
    on_ray = parse_executor(config.executor)[0] == "ray"
    device = torch.device("cpu") if on_ray else resolve_device(config.device)  # Ray tasks pick their own
    probes = build_probes(config.probes)
    with process_group(device) as world, probe_pool(config, probes, world, probes_here=not on_ray) as pool:
        data = (dataset if dataset is not None else prepare_dataset(config)).to(device)
        source: ModelSource = model if model is not None else config.model
        study = Study(config, source, data, probes, device, Path(out) if out is not None else None, listener, pool)
        results = Results(model=config.model, dataset=data.name,
                          config={**config.to_dict(), "device": str(device),
                                  "samples_probed": len(study.probe_split),
                                  "custom_model": model is not None, "custom_dataset": dataset is not None,
                                  VERSIONS_FIELD: probe_versions(probes)})
        runs = _kept_runs(results, study.out_dir) if resume else {}
        if not has_batchnorm(study.base(config.run_seeds[0])):
            raise NoBatchNormError(f"model {results.model} has no BatchNorm layer: there is nothing to compare; "
                                   "pick a CNN with BatchNorm")
        checking = time.perf_counter()
        study.check_variants()
        listener.study_prepared(checking - started, time.perf_counter() - checking)
        if overwrite and world.is_main and study.out_dir is not None:
            remove_study(study.out_dir)
        if on_ray:
            from bnprobe.study._ray import run_on_ray  # Ray only when asked for

            run_on_ray(study, results, runs, world)
        else:
            _run_all(study, results, runs, world, resume)
        if world.is_main and study.out_dir is not None:
            write_outputs(results, study.out_dir)
    return results


def check_starting_weights(config: StudyConfig, model: ModelSource | None) -> None:
    """A ``fine-tune`` study needs weights to start from: pretrained ones, ``init_weights``, or a given module's."""
    if config.mode == "fine-tune" and not (config.pretrained or config.init_weights or isinstance(model, nn.Module)):
        raise BnprobeError("mode fine-tune trains from starting weights, but none are given; add "
                           f"{option('pretrained')} (or a FILE) or {option('init_weights', 'FILE')}, or train "
                           "from scratch")


def check_dataset(dataset: object) -> None:
    """A study's own data must be a :class:`Dataset`; loaders are read into one by ``Dataset.from_loaders``."""
    if dataset is not None and not isinstance(dataset, Dataset):
        raise BnprobeError(f"a study's dataset must be a bnprobe.Dataset, got {type(dataset).__name__}; "
                           "wrap your loaders: bnprobe.Dataset.from_loaders(train_loader, test_loader)")


def probe_pool(config: StudyConfig, probes: list[Probe], world: World, probes_here: bool = True) -> ProbePool:
    """The study's probe workers, started now (they take seconds to start) when they will have work:
    not when ``probes_here`` is False (Ray tasks probe the runs)."""
    wanted = world.is_main and probes_here and any(probe.splits for probe in probes)
    pool = ProbePool(config.probe_workers if wanted else 0)
    try:
        pool.start()
    except BaseException:
        pool.close()
        raise
    return pool


def _kept_runs(results: Results, out_dir: Path | None) -> dict[tuple[str, int], RunResult]:
    """The finished runs of the study saved in ``out_dir`` (none if there is none), after checking its config."""
    if out_dir is None or not (out_dir / "results.json").is_file():
        return {}
    saved = Results.load(out_dir)
    saved_config = {**ADDED_FIELDS, **renamed_config(saved.config)}
    saved_config.setdefault("mode", default_mode(saved_config))  # saved before modes: as they ran
    difference = first_difference(saved_config, _with_saved_variants(results.config, saved_config),
                                  ignore=(*MAY_CHANGE_ON_RESUME, VERSIONS_FIELD))
    if difference is not None:
        raise BnprobeError(f"cannot resume the study in {out_dir}: its config differs ({difference}); "
                           f"use the same options, or another {setting('out')}")
    check_same_versions(saved_config, results.config[VERSIONS_FIELD], out_dir)
    results.layers = saved.layers
    return {(run.variant, run.seed): run for run in saved.runs}


def _with_saved_variants(config: dict, saved: dict) -> dict:
    """``config`` as the saved study would have it when ``config`` only adds variants after the saved ones
    (a study resumed with ``init`` or one more norm target), so that only a real change is a difference."""
    variants, before = list(config.get("variants", [])), list(saved.get("variants", []))
    if variants == before or variants[:len(before)] != before:
        return config
    overrides = {v: o for v, o in config.get("overrides", {}).items() if v in before}
    return {**config, "variants": before, "overrides": overrides}


class Ledger:
    """A study's runs: the finished ones, saved in study order after each is filed, and the probed
    ones whose numbers workers are still computing."""

    def __init__(self, results: Results, runs: dict[tuple[str, int], RunResult], order: list[tuple[str, int]],
                 out_dir: Path | None, world: World, listener: StudyListener, *,
                 keep: Callable[[str, int], None]) -> None:
        self.results, self.runs, self.order = results, runs, order
        self.out_dir, self.world, self.listener = out_dir, world, listener
        self.keep, self.checkpoints_kept = keep, set()  # cuts a filed run's checkpoint down; the runs it has cut
        self.probing: dict[tuple[str, int], tuple[PendingOutcome, Callable[[ProbeOutcome], RunResult], RunTimings]] = {}

    def save(self) -> None:
        self.results.runs = [self.runs[key] for key in self.order if key in self.runs]
        if self.out_dir is not None and self.world.is_main:
            self.results.save(self.out_dir)
            for key in [key for key in self.runs if key not in self.checkpoints_kept]:  # filed: never resumed
                self.keep(*key)
                self.checkpoints_kept.add(key)

    @property
    def finished(self) -> list[tuple[str, int]]:
        """The filed runs, in study order."""
        return [key for key in self.order if key in self.runs]

    def expect(self, key: tuple[str, int], outcome: PendingOutcome, finish: Callable[[ProbeOutcome], RunResult],
               timings: RunTimings) -> None:
        """File run ``key`` as ``finish(numbers)`` once ``outcome``'s numbers are in; file what is ready now.

        The time spent waiting for the numbers is added to ``timings.probe``."""
        self.probing[key] = (outcome, finish, timings)
        self.settle(wait=False)

    def settle(self, wait: bool) -> None:
        """File the runs whose probe numbers are in (all of them with ``wait``), in study order."""
        for key in [key for key in self.order if key in self.probing]:
            outcome, finish, timings = self.probing[key]
            if not wait and not outcome.done():
                continue
            del self.probing[key]
            waiting = time.perf_counter()
            run = finish(outcome.result())
            self.file(key, run, replace(timings, probe=timings.probe + time.perf_counter() - waiting))

    def file(self, key: tuple[str, int], run: RunResult, timings: RunTimings) -> None:
        """Keep the finished run ``key``, save the study, and tell the listener."""
        self.runs[key] = run
        self.save()
        self.listener.run_finished(run, timings)


def _run_all(study: Study, results: Results, runs: dict[tuple[str, int], RunResult], world: World,
             resume: bool) -> None:
    """Train and probe every run not in ``runs`` (finished ones), saving ``results`` after each."""
    config, listener = study.config, study.listener
    ledger = Ledger(results, runs, study_order(config), study.out_dir, world, listener, keep=study.keep_checkpoint)
    ledger.save()
    listener.study_started(len(ledger.order))
    try:
        fused = train_fused_groups(study, pending_runs(config, runs), resume)
        for seed in config.run_seeds:
            reference: CaptureResult | None = None
            for variant in sorted(config.variants, key=lambda v: v != REFERENCE_VARIANT):  # bn first: the reference
                kept = runs.get((variant, seed))
                if kept is not None:
                    pending = any((v, seed) not in runs for v in config.variants)
                    if variant == REFERENCE_VARIANT and kept.diverged_at_epoch is None and pending and world.is_main:
                        reference = study.capture(study.trained(variant, seed), variant, seed)
                    listener.run_finished(kept, RunTimings(kept=True))
                    continue
                if (variant, seed) in fused:
                    model, report, trained = fused.pop((variant, seed))
                else:
                    model, report, trained = train_one(study, variant, seed, resume)
                if not world.is_main:
                    continue
                outcome, captured, finish, timings = probe_trained(study, variant, seed, model, report, trained,
                                                                   reference)
                if captured is not None:
                    results.layers = results.layers or captured.names
                if variant == REFERENCE_VARIANT:
                    reference = captured
                del captured  # only the reference's vectors stay (often on the GPU) while the next run is captured
                ledger.expect((variant, seed), outcome, finish, timings)
            study.clear_cache()  # probes' prepared data no longer reads the caches
        ledger.settle(wait=True)
        if world.is_main:
            study.drop_checkpoints()
    except KeyboardInterrupt as exc:
        ledger.settle(wait=False)  # before the runs are named
        raise StudyInterrupted(ledger.finished) from exc
    finally:
        ledger.settle(wait=False)  # on an error, file the runs whose numbers are in before it propagates


def study_order(config: StudyConfig) -> list[tuple[str, int]]:
    """The runs of the study (this shard's), in the order results list them: by seed, then variant."""
    return [(variant, seed) for seed in config.run_seeds for variant in config.variants]


def pending_runs(config: StudyConfig, runs: dict[tuple[str, int], RunResult]) -> dict[str, list[int]]:
    """``{variant: seeds}`` of the runs not in ``runs`` (the finished ones)."""
    return {variant: [seed for seed in config.run_seeds if (variant, seed) not in runs] for variant in config.variants}


def probe_trained(study: Study, variant: str, seed: int, model: nn.Module, report: SwapReport, trained: TrainResult,
                  reference: CaptureResult | None,
                  ) -> tuple[PendingOutcome, CaptureResult | None, Callable[[ProbeOutcome], RunResult], RunTimings]:
    """Capture and start the probes of a trained run (not of a diverged one, whose activations say
    nothing): its pending numbers, its capture, what files it once they are in, and its timings."""
    outcome, captured = PendingOutcome([], None), None
    timings = RunTimings(train=trained.seconds, fused_runs=trained.fused_runs, train_parts=trained.timings)
    if trained.diverged_at_epoch is None:
        outcome, captured, probed = study.probe(model, variant, seed, reference)
        timings = replace(timings, capture=probed.capture, probe=probed.probe)
    flags = run_flags(trained, study.dataset, untrained=variant == INIT_VARIANT)
    return outcome, captured, partial(_run_result, variant, seed, trained, report, flags), timings


def train_one(study: Study, variant: str, seed: int, resume: bool) -> tuple[nn.Module, SwapReport, TrainResult]:
    """Make and train ``variant`` under ``seed`` alone (not fused); only evaluate it when it is not trained
    (``init``, a ``probe-only`` study)."""
    config, listener = study.config, study.listener
    model, report = study.variant(variant, seed)
    listener.variant_made(variant, seed, report)
    trains = study.trains(variant)
    if trains:
        listener.training_started(variant, seed, config.train_for(variant).epochs)
    trained = train_model(model, study.dataset.train, study.dataset.test, config=config.train_for(variant),
                          evaluate_only=not trains,
                          device=study.device, seed=seed, on_epoch=study.on_epoch(variant, seed),
                          on_step=study.on_step(variant, seed),
                          augment=study.augment, checkpoint=study.checkpoint(variant, seed), resume=resume,
                          recalibrate_bn=config.recalibrate_bn)
    return model, report, trained


def _run_result(variant: str, seed: int, trained: TrainResult, report: SwapReport, flags: list[dict],
                outcome: ProbeOutcome) -> RunResult:
    """What the study files for one run: its training numbers and history, its swap report, its flags
    (:mod:`bnprobe.train._flags`) and its probes' numbers and notes."""
    return RunResult(variant=variant, seed=seed, train_accuracy=trained.train_accuracy,
                     test_accuracy=trained.test_accuracy, final_loss=finite_or_none(trained.final_loss),
                     test_loss=finite_or_none(trained.test_loss), epochs_run=trained.epochs_run,
                     diverged_at_epoch=trained.diverged_at_epoch, swap=report.to_dict(),
                     probes=outcome.values, failures=[f.to_dict() for f in outcome.failures],
                     history=finite_history(trained.history), flags=flags, notes=outcome.notes,
                     train_mode_test_accuracy=trained.train_mode_test_accuracy, recalibrated_bn=trained.recalibrated_bn,
                     sample_sets=outcome.sample_sets)


def train_fused_groups(study: Study, pending: dict[str, list[int]],
                       resume: bool) -> dict[tuple[str, int], tuple[nn.Module, SwapReport, TrainResult]]:
    """Train the ``pending`` seeds of every variant (``{variant: seeds}``) that can be fused; the trained
    runs by (variant, seed).

    Runs left out (fusion off, or not possible) are trained one by one later (:func:`train_one`), and
    runs that are not trained (:meth:`Study.trains`) are only evaluated there.
    """
    config, listener = study.config, study.listener
    wanted = config.fuse if config.fuse is not None else study.device.type == "cuda"
    trained: dict[tuple[str, int], tuple[nn.Module, SwapReport, TrainResult]] = {}
    for variant, seeds in pending.items():
        if not seeds or not study.trains(variant):
            continue
        train_config = config.train_for(variant)
        reason = fusion_blocker(train_config, study.dataset.train, study.device, len(seeds)) if wanted else \
            "fusion is off" + (" (on by default on CUDA only)" if config.fuse is None else "")
        if reason is not None:
            listener.training_planned(variant, seeds, reason)
            continue
        made = {seed: study.variant(variant, seed) for seed in seeds}
        group = [FusedRun(model, seed, study.checkpoint(variant, seed), study.on_epoch(variant, seed),
                          study.on_step(variant, seed))
                 for seed, (model, _) in made.items()]
        try:
            results = train_fused(group, study.dataset.train, study.dataset.test, config=train_config,
                                  device=study.device, augment=study.augment, resume=resume,
                                  on_start=partial(_announce_fused, listener, variant, made, train_config.epochs),
                                  cuda_graph=config.cuda_graph, on_graph=partial(listener.fused_steps, variant),
                                  recalibrate_bn=config.recalibrate_bn)
        except FusionUnavailable as exc:
            listener.training_planned(variant, seeds, str(exc))
            continue
        for (seed, (model, report)), result in zip(made.items(), results, strict=True):
            trained[(variant, seed)] = (model, report, result)
    return trained


def _announce_fused(listener: StudyListener, variant: str, made: dict[int, tuple[nn.Module, SwapReport]],
                    epochs: int) -> None:
    """Tell the listener that ``variant``'s seeds in ``made`` train fused, and that they started."""
    listener.training_planned(variant, list(made), None)
    for seed, (_, report) in made.items():
        listener.variant_made(variant, seed, report)
        listener.training_started(variant, seed, epochs)
