"""Named presets: a published study as data, and ``bnprobe reproduce`` running it with its verdicts.

A :class:`Preset` is plain data: the settings a paper shares across its experiments (variants, seeds,
probed samples, probes) and one :class:`Recipe` per dataset (model, training recipe, the learning
rate of the BN-free model where it differs, augmentation, and the smaller ``--quick`` version).
:func:`build_study` turns a preset, a dataset and the user's :class:`Changes` into a
:class:`PresetStudy` -- a :class:`bnprobe.study.StudyConfig` plus the data subsets and model
arguments a config cannot express -- and :func:`reproduce` runs it, writes the usual outputs
(``results.json``, ``results.csv``, ``plots/``) and ``verdicts.json``, and returns the numbers the
paper compares: the study's results, each variant's generalisation gap, and a verdict on each
finding (:mod:`bnprobe.reproduce._verdict`).

Presets are registered by name in :data:`PRESETS` (:func:`get_preset` looks one up and lists the
names when it fails), the way :mod:`bnprobe.models._registry` registers built-in models.

**Subsets.**  A recipe's ``--quick`` version (or ``--train-subset`` / ``--test-subset``) trains on the
first ``n`` images of a fixed permutation (seed :data:`SUBSET_SEED`) of a split: the same images for
every variant, seed and run.  The images keep the normalisation of the full training split.  Such a
study loads its data here and hands them to :func:`bnprobe.study.run_study`, so ``results.json``
records ``custom_dataset: true``; ``verdicts.json`` records the subset sizes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from bnprobe._common import INIT_VARIANT, REFERENCE_VARIANT, write_atomic
from bnprobe._hints import setting
from bnprobe.data._loaders import Dataset, Split, permuted_subset
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.models._factory import create_model
from bnprobe.probes import build_probes
from bnprobe.report import probe_metrics, summary_json
from bnprobe.report._results import Results
from bnprobe.report._stats import Difference, Summary, paired_difference, summarise
from bnprobe.reproduce._clustering_verdict import clustering_verdict
from bnprobe.reproduce._generalisation_verdict import generalisation_verdict
from bnprobe.reproduce._sparsity_verdict import sparsity_change_verdict
from bnprobe.reproduce._verdict import Verdict
from bnprobe.study import StudyConfig, StudyListener, prepare_dataset, run_study
from bnprobe.study._dir import check_out_dir
from bnprobe.train._loop import TrainConfig

SUBSET_SEED = 20251126
"""Seed of the permutation a training or test subset is cut from (the same subset for every run)."""

VERDICT_LABELS: dict[bool | None, str] = {True: "HOLDS", False: "DOES NOT HOLD", None: "UNDECIDED"}
"""How a :attr:`bnprobe.reproduce.Verdict.holds` value is printed and saved."""


@dataclass(frozen=True)
class Quick:
    """The ``--quick`` version of a recipe: a run that fits a 2-core CPU in a few minutes.

    ``train_subset`` / ``test_subset``: images kept from each split (None: all of it).
    """

    train_subset: int | None
    test_subset: int | None
    epochs: int
    seeds: int
    samples: int


@dataclass(frozen=True)
class Recipe:
    """How a preset trains on one dataset.

    ``no_bn`` holds the training settings (fields of :data:`bnprobe.train.PER_VARIANT`) that every
    BN-free variant gets instead of ``train``'s -- a paper's separate learning rate for the model
    without BatchNorm.  ``recalibrate_bn``: whether the BatchNorm running statistics are recomputed
    after training (:attr:`bnprobe.study.StudyConfig.recalibrate_bn`).
    """

    model: str
    train: TrainConfig
    augment: bool
    quick: Quick
    no_bn: Mapping[str, Any] = field(default_factory=dict)
    recalibrate_bn: bool = False


@dataclass(frozen=True)
class Preset:
    """A published study: what all its experiments share, and a :class:`Recipe` per dataset.

    ``aliases`` maps a dataset to the dataset whose recipe it borrows (``fashion-mnist`` -> ``mnist``);
    ``report_metrics`` are the metrics the terminal report shows.
    """

    name: str
    paper: str
    variants: tuple[str, ...]
    seeds: int
    samples: int
    probes: tuple[str, ...]
    layers: str
    report_metrics: tuple[str, ...]
    recipes: Mapping[str, Recipe]
    aliases: Mapping[str, str] = field(default_factory=dict)
    sample_sets: int = 1
    """Disjoint probe sample sets per seed (:attr:`bnprobe.study.StudyConfig.sample_sets`), in full and quick runs."""

    @property
    def datasets(self) -> list[str]:
        """Every dataset the preset runs on: its own recipes' and the aliases'."""
        return sorted([*self.recipes, *self.aliases])

    def recipe(self, dataset: str | None) -> Recipe:
        """The recipe for ``dataset``; a one-line error listing the datasets when it has none."""
        names = ", ".join(self.datasets)
        if dataset is None:
            raise BnprobeError(f"preset {self.name} needs {setting('dataset')}: one of {names}")
        recipe = self.recipes.get(self.aliases.get(dataset, dataset))
        if recipe is None:
            raise UnknownNameError(f"preset {self.name} has no recipe for dataset {dataset!r}; datasets: {names}")
        return recipe


POTGIETER2025 = Preset(
    name="potgieter2025",
    paper="Potgieter, Mouton & Davel (2025), Impact of Batch Normalization on Convolutional Network Representations",
    variants=(REFERENCE_VARIANT, "identity+bias", INIT_VARIANT),
    seeds=4,
    samples=5000,
    probes=("sparsity", "hdbscan"),
    layers="act",
    report_metrics=("channel_sparsity", "ari", "n_clusters", "noise_fraction"),
    recipes={
        "mnist": Recipe(
            model="cnn4",
            train=TrainConfig(epochs=30, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0,
                              schedule="constant"),
            augment=False,
            recalibrate_bn=False,  # the paper evaluates the models as trained; the eval_below_train flag guards
            quick=Quick(train_subset=10_000, test_subset=None, epochs=5, seeds=2, samples=1000),
        ),
        "cifar10": Recipe(
            model="vgg16_cifar",
            train=TrainConfig(epochs=50, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                              schedule="constant"),
            no_bn={"lr": 1e-4},
            augment=False,
            recalibrate_bn=False,
            quick=Quick(train_subset=1000, test_subset=500, epochs=2, seeds=2, samples=250),
        ),
    },
    aliases={"fashion-mnist": "mnist"},
    sample_sets=2,  # the choice of probed samples in the intervals: 2 x 4 x 5,000 of 60,000 training images
)
"""The paper's two setups; docs/reproducing.md says which values the paper states and why the rest."""

PRESETS: dict[str, Preset] = {POTGIETER2025.name: POTGIETER2025}


def list_presets() -> list[str]:
    """The names ``bnprobe reproduce`` accepts."""
    return sorted(PRESETS)


def get_preset(name: str | None) -> Preset:
    """The preset called ``name``; a one-line error listing the presets when there is none."""
    preset = PRESETS.get(name) if name is not None else None
    if preset is None:
        what = f"unknown preset {name!r}" if name is not None else "name a preset"
        raise UnknownNameError(f"{what}; presets: {', '.join(list_presets())}")
    return preset


@dataclass(frozen=True)
class Changes:
    """What a user changes in a preset; every field left empty keeps the preset's value.

    * ``study`` -- :class:`StudyConfig` fields (``seeds``, ``variants``, ``device``, ``model``, ...);
    * ``train`` -- :class:`TrainConfig` fields.  A per-variant field given here is the value for every
      variant: the preset's own value for BN-free variants is dropped;
    * ``per_variant`` -- ``{variant: {field: value}}`` for single variants, applied last;
    * ``train_subset`` / ``test_subset`` -- images kept from a split, 0 for all of it;
    * ``model_kwargs`` -- arguments for the model's constructor (``{"width": 64}`` for ``cnn4``).
    """

    study: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    per_variant: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    train_subset: int | None = None
    test_subset: int | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PresetStudy:
    """A preset resolved for one dataset: the study to run, and what a :class:`StudyConfig` cannot hold."""

    preset: str
    quick: bool
    config: StudyConfig
    train_subset: int | None = None
    test_subset: int | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    report_metrics: tuple[str, ...] = ()

    @property
    def compared_variant(self) -> str:
        """The BN-free variant the verdicts compare with ``bn``: the first trained one listed (``init`` is
        the untrained reference, shown beside them)."""
        return next(v for v in self.config.variants if v not in (REFERENCE_VARIANT, INIT_VARIANT))

    def to_dict(self) -> dict:
        return {"preset": self.preset, "dataset": self.config.dataset, "quick": self.quick,
                "train_subset": self.train_subset, "test_subset": self.test_subset,
                "model_kwargs": dict(self.model_kwargs), "compared_variant": self.compared_variant}


def build_study(preset: str, dataset: str | None, *, quick: bool = False,
                changes: Changes | None = None) -> PresetStudy:
    """The study ``preset`` runs on ``dataset`` (its ``--quick`` version if ``quick``), with ``changes``.

    Precedence, lowest first: the preset, its quick version, the user's changes.  Fails with one line
    on an unknown preset or dataset, on a change that is no setting, or when the variants lack ``bn``
    or a BN-free variant to compare it with (the verdicts need both).
    """
    spec = get_preset(preset)
    recipe = spec.recipe(dataset)
    changes = changes or Changes()
    study: dict[str, Any] = {"model": recipe.model, "dataset": dataset, "variants": spec.variants,
                             "seeds": spec.seeds, "samples": spec.samples,
                             "sample_sets": spec.sample_sets, "probes": spec.probes,
                             "layers": spec.layers, "augment": recipe.augment, "recalibrate_bn": recipe.recalibrate_bn}
    train = recipe.train
    subsets = (None, None)
    if quick:
        study.update(seeds=recipe.quick.seeds, samples=recipe.quick.samples)
        train = replace(train, epochs=recipe.quick.epochs)
        subsets = (recipe.quick.train_subset, recipe.quick.test_subset)
    study.update(_checked("study setting", changes.study, {f.name for f in fields(StudyConfig)} - {"train"}))
    train = replace(train, **_checked("training setting", changes.train, {f.name for f in fields(TrainConfig)}))
    variants = list(study["variants"])
    if REFERENCE_VARIANT not in variants or not set(variants) - {REFERENCE_VARIANT, INIT_VARIANT}:
        raise BnprobeError(f"the verdicts compare {REFERENCE_VARIANT} with a BN-free variant; {setting('variants')} "
                           "needs "
                           f"{REFERENCE_VARIANT} and at least one other, got {','.join(variants)}")
    no_bn = {k: v for k, v in recipe.no_bn.items() if k not in changes.train}
    overrides: dict[str, dict[str, Any]] = {v: dict(no_bn) for v in variants
                                            if v not in (REFERENCE_VARIANT, INIT_VARIANT) and no_bn}
    for variant, values in changes.per_variant.items():
        overrides.setdefault(variant, {}).update(values)
    train_subset = subsets[0] if changes.train_subset is None else changes.train_subset or None
    test_subset = subsets[1] if changes.test_subset is None else changes.test_subset or None
    for option, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and value < 1:
            raise BnprobeError(f"{option} must be a positive number of images (0: the whole split), got {value}")
    config = StudyConfig(**study, train=train, overrides=overrides)
    return PresetStudy(spec.name, quick, config, train_subset, test_subset, dict(changes.model_kwargs),
                       spec.report_metrics)


def _checked(what: str, values: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """``values`` after checking every key is one of ``known``."""
    unknown = sorted(set(values) - known)
    if unknown:
        raise BnprobeError(f"{unknown[0]} is no {what}; {what}s: {', '.join(sorted(known))}")
    return dict(values)


def subset(split: Split, n: int | None) -> Split:
    """The first ``n`` images of a fixed permutation of ``split`` (all of it when ``n`` is None or larger)."""
    if n is None or n >= len(split):
        return split
    return permuted_subset(split, n, SUBSET_SEED)


def load_study_dataset(study: PresetStudy) -> Dataset:
    """The study's dataset, loaded as ``bnprobe run`` would, and cut to its subsets."""
    dataset = prepare_dataset(study.config)
    return replace(dataset, train=subset(dataset.train, study.train_subset),
                   test=subset(dataset.test, study.test_subset),
                   info={**dataset.info, "train_subset": study.train_subset, "test_subset": study.test_subset})


def model_label(name: str, kwargs: Mapping[str, Any]) -> str:
    """``name`` with its constructor arguments, ``cnn4(width=64)``; the bare name when there are none."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else name


def model_factory(name: str, kwargs: Mapping[str, Any], dataset: Dataset) -> Callable[[], nn.Module]:
    """A factory for model ``name`` built with ``kwargs``, named :func:`model_label` in the results."""
    def build() -> nn.Module:
        try:
            return create_model(name, num_classes=dataset.num_classes, in_chans=dataset.channels,
                                img_size=dataset.image_size, **kwargs)
        except TypeError as exc:
            raise BnprobeError(f"model {name} does not take {', '.join(kwargs)}: {exc}") from None

    build.__name__ = model_label(name, kwargs)
    return build


def study_inputs(study: PresetStudy) -> tuple[Dataset | None, Callable[[], nn.Module] | None]:
    """The dataset and model factory to hand :func:`bnprobe.study.run_study` (or ``reprobe_study``):
    loaded here only when the study needs a subset or model arguments, otherwise None (loaded there)."""
    dataset = model = None
    if study.train_subset or study.test_subset or study.model_kwargs:
        dataset = load_study_dataset(study)
        if study.model_kwargs:
            model = model_factory(study.config.model, study.model_kwargs, dataset)
    return dataset, model


@dataclass
class Reproduction:
    """A finished reproduction: the study, its results, each variant's generalisation gap and the verdicts.

    ``gaps``: per variant, train minus test accuracy over the seeds (mean ± std); ``gap_differences``:
    per BN-free variant, its gap minus ``bn``'s, paired by seed with the 95% interval.
    """

    study: PresetStudy
    results: Results
    gaps: dict[str, Summary | None]
    gap_differences: dict[str, Difference | None]
    verdicts: list[Verdict]

    @property
    def flagged_runs(self) -> list[dict]:
        """``{"variant", "seed", "flags"}`` of every run with a flag (:mod:`bnprobe.train._flags`): the verdicts rest
        on these runs too, so a flagged ``bn`` reference (lagging statistics, at chance) is named beside them."""
        return [{"variant": run.variant, "seed": run.seed, "flags": [flag["name"] for flag in run.flags]}
                for run in self.results.runs if run.flags]

    def shown_metrics(self) -> list[str] | None:
        """The preset's report metrics that the results have; None (each probe's key metric) if none."""
        present = {m for probe in self.results.probe_keys for m in probe_metrics(self.results, probe)}
        return [m for m in self.study.report_metrics if m in present] or None

    def to_dict(self) -> dict:
        """What ``verdicts.json`` holds."""
        return {**self.study.to_dict(),
                "verdicts": [{**v.to_dict(), "verdict": VERDICT_LABELS[v.holds]} for v in self.verdicts],
                "flagged_runs": self.flagged_runs,
                "generalisation_gap": {
                    variant: {**(gap.to_dict() if gap else {"mean": None, "std": None, "n": 0}),
                              "difference": d.to_dict() if (d := self.gap_differences.get(variant)) else None}
                    for variant, gap in self.gaps.items()}}

    def summary_json(self) -> dict:
        """What ``bnprobe reproduce --json`` prints: :func:`bnprobe.report.summary_json` of the results,
        with :meth:`to_dict` (``verdicts.json``) under ``"reproduction"``."""
        return {**summary_json(self.results), "reproduction": self.to_dict()}


def generalisation_gaps(results: Results) -> dict[str, dict[int, float]]:
    """``{variant: {seed: train accuracy - test accuracy}}`` over the runs with a test accuracy."""
    gaps: dict[str, dict[int, float]] = {variant: {} for variant in results.variants}
    for run in results.runs:
        if run.test_accuracy is not None:
            gaps[run.variant][run.seed] = run.train_accuracy - run.test_accuracy
    return gaps


def assess(study: PresetStudy, results: Results) -> Reproduction:
    """The paper's comparisons on ``results``: generalisation gaps and the verdicts a1, a2 and b."""
    per_variant = generalisation_gaps(results)
    gaps = {v: summarise(values.values()) for v, values in per_variant.items()}
    reference = per_variant.get(REFERENCE_VARIANT, {})
    differences = {v: paired_difference(values, reference) for v, values in per_variant.items()
                   if v != REFERENCE_VARIANT}
    clustering_probe = next((p.key for p in build_probes(study.config.probes) if p.name == "hdbscan"), "hdbscan")
    variant = study.compared_variant
    verdicts = [sparsity_change_verdict(results, variant=variant), generalisation_verdict(results, variant=variant),
                clustering_verdict(results, variant=variant, probe=clustering_probe)]
    return Reproduction(study, results, gaps, differences, verdicts)


def reproduce(study: PresetStudy, *, out: str | Path, listener: StudyListener | None = None,
              resume: bool = False, overwrite: bool = False) -> Reproduction:
    """Run ``study``, write ``results.json``, ``results.csv``, ``plots/`` and ``verdicts.json`` to ``out``.

    As for :func:`run_study`, a folder that holds a study is refused -- before the data are loaded --
    unless ``resume`` continues it or ``overwrite`` replaces it.

    The data are loaded here only when the study needs a subset or model arguments; otherwise
    :func:`run_study` loads them as ``bnprobe run`` does (and ``bnprobe probe OUT`` can re-probe it).
    """
    check_out_dir(out, resume=resume, overwrite=overwrite)
    dataset, model = study_inputs(study)
    results = run_study(study.config, out=out, model=model, dataset=dataset, listener=listener, resume=resume,
                        overwrite=overwrite)
    reproduction = assess(study, results)
    write_atomic(Path(out) / "verdicts.json", json.dumps(reproduction.to_dict(), indent=2, allow_nan=False))
    return reproduction

