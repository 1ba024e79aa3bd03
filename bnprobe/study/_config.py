"""What defines a study: :class:`StudyConfig`, checked on creation, saved in ``results.json`` and read
back from it (older files too: :func:`renamed_config`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import wraps
from typing import Any

from bnprobe._common import (
    CHECKPOINT_MODES,
    DEFAULT_VARIANTS,
    INIT_VARIANT,
    REFERENCE_VARIANT,
    STUDY_MODES,
    default_mode,
)
from bnprobe._hints import in_words, option
from bnprobe._seeds import describe_seeds, parse_seeds, shard_seeds
from bnprobe.capture._capture import (
    DEFAULT_MAX_DEVICE_MEMORY,
    DEFAULT_MAX_MEMORY,
    check_max_device_memory,
    check_spatial,
)
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.params import check_choice, split_list
from bnprobe.probes import build_probes, split_probe_list
from bnprobe.study._executor import check_executor
from bnprobe.surgery._targets import list_targets, parse_target
from bnprobe.train._loop import (
    PER_VARIANT,
    TrainConfig,
)

MAY_CHANGE_ON_RESUME = ("device", "data_root", "max_memory", "max_device_memory", "train.compile", "fuse",
                        "cuda_graph", "probe_workers", "executor", "gpus_per_task", "cpus_per_task", "max_retries")
"""Config fields that say where or how fast a study runs, not what it computes or keeps."""
ADDED_FIELDS = {"recalibrate_bn": False, "pretrained": False, "weights": {}, "first_seed": 0, "shard": None,
                "sample_sets": 1}
"""Config fields newer than some saved studies, with the value those studies ran with (compared on resume)."""


@dataclass
class StudyConfig:
    """Everything that defines a study; ``bnprobe run`` fills it from its options."""

    model: str
    dataset: str = "digits"
    variants: Sequence[str] = DEFAULT_VARIANTS
    """``bn`` (the model as built), norm targets (:func:`bnprobe.surgery.parse_target`), and ``init``: the ``bn``
    model of each seed as initialised, not trained (:data:`bnprobe._common.INIT_VARIANT`)."""
    seeds: int | str = 1
    """How many seeds, ``first_seed`` on (``4``: seeds 0-3); a range ``"4-7"`` sets ``first_seed`` too."""
    samples: int = 5000
    sample_sets: int = 1
    """Disjoint sets of ``samples`` each run is probed on.  1: every run probes the same samples, so the
    intervals over seeds carry none of the spread that the choice of samples brings.  K >= 2: seed ``s``
    probes K sets of its own (blocks ``sK`` to ``sK + K - 1`` of the one fixed permutation, shared by
    every variant of the seed and disjoint from every other seed's); a run's numbers are the means over
    its sets, each set's are kept (:attr:`bnprobe.report.RunResult.sample_sets`), and the report splits
    the spread into seeds and samples (:func:`bnprobe.report.spread_sources`)."""
    probes: Sequence[str] = ("sparsity", "hdbscan")
    device: str = "auto"
    data_root: str | None = None
    layers: str = "act"
    spatial: str = "flatten"
    max_memory: int | None = DEFAULT_MAX_MEMORY
    max_device_memory: int | None | str = DEFAULT_MAX_DEVICE_MEMORY
    """GPU memory the captured vectors may take (:func:`bnprobe.capture.capture`): ``"auto"``, bytes, None or 0."""
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: bool = True
    """Apply the dataset's augmentation policy while training."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-variant hyperparameters: ``{"identity": {"lr": 0.02}}`` (fields in :data:`PER_VARIANT`)."""
    init_weights: str | None = None
    """Weights loaded into each seed's model before its variants are made (``fold``/``frozen`` on trained BN)."""
    fuse: bool | None = None
    """Train a variant's seeds as one vmapped model: True, False, or None (on CUDA only; see above)."""
    cuda_graph: bool = True
    """Replay a fused step from a CUDA graph on CUDA (:mod:`bnprobe.train._step_graph`); same numbers, less overhead."""
    probe_workers: int | None = None
    """Worker processes for the CPU half of split probes (HDBSCAN): None is one per core but one, from
    4 cores (:func:`bnprobe.probes.pool.auto_workers`); 0 probes in the study's process only."""
    checkpoints: str = "final"
    """What a finished run's checkpoint keeps: ``final`` weights, the whole ``resume`` state, or ``none``
    once the study is done (:mod:`bnprobe.train._state`)."""
    recalibrate_bn: bool = False
    """Recompute every run's BatchNorm running statistics over the training split after training, before
    it is evaluated and captured (:meth:`bnprobe.train._loop.TrainingRun.after_training`); off, runs are used
    as trained."""
    pretrained: bool | str = False
    """Start from the weights the model is published with: True reads them from the local cache, a path
    from that file; adapted to the dataset's classes and channels (:mod:`bnprobe.models._pretrained`)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Each run's own weights, trained elsewhere: ``{"bn": "a.pt", "identity@1": "c.pt"}`` (``VARIANT`` is
    seed 0); they must cover every variant and seed, fit the swapped model exactly, and are probed as
    they are (``probe-only``)."""
    first_seed: int = 0
    """The first of the study's seeds (a shard of a larger study may start past 0)."""
    shard: str | None = None
    """``"K/N"``: run only the K-th of N parts of the seeds (every N-th seed from the K-th), for an array
    job; ``bnprobe merge`` joins the parts (:mod:`bnprobe.study._shards`)."""
    executor: str = "local"
    """Where the runs train: ``local`` (this process) or ``ray`` / ``ray:ADDRESS`` (:mod:`bnprobe.study._ray`)."""
    gpus_per_task: float | None = None
    """GPUs each Ray task asks for (fractions pack several on one GPU); None: 1 on CUDA, else 0."""
    cpus_per_task: float = 1.0
    """CPUs each Ray task asks for."""
    max_retries: int = 3
    """How often Ray retries a task whose worker died; the retry resumes from the run's last epoch."""
    mode: str | None = None
    """How runs come by their weights (:data:`bnprobe._common.STUDY_MODES`): ``scratch``, ``fine-tune`` or
    ``probe-only``; None picks ``probe-only`` with ``weights``, ``fine-tune`` with ``pretrained`` or
    ``init_weights``, else ``scratch``."""

    def __post_init__(self) -> None:
        # A comma list is accepted where a list is, as on the command line.
        self.variants = split_list(self.variants) if isinstance(self.variants, str) else list(self.variants)
        self.probes = split_probe_list(self.probes) if isinstance(self.probes, str) else list(self.probes)
        self.train = _as_train_config(self.train)
        for variant in self.variants:
            if variant in (REFERENCE_VARIANT, INIT_VARIANT):
                continue
            try:
                parse_target(variant)
            except UnknownNameError:
                valid = ", ".join([REFERENCE_VARIANT, *list_targets(), INIT_VARIANT])
                raise UnknownNameError(f"unknown variant {variant!r}; valid variants: {valid}") from None
        if not self.variants:
            raise BnprobeError("no variants given; list at least one, e.g. bn,identity")
        if len(set(self.variants)) != len(self.variants):
            raise BnprobeError("a variant is listed twice; give each variant once")
        self.first_seed, self.seeds = parse_seeds(self.seeds, self.first_seed)
        if self.shard is not None:
            shard_seeds(self.seed_range, self.shard)  # a shard with no seeds fails now
        check_executor(self.executor, self.gpus_per_task, self.cpus_per_task, self.max_retries)
        if self.samples < 1:
            raise BnprobeError(f"samples must be at least 1, got {self.samples}")
        if isinstance(self.sample_sets, bool) or not isinstance(self.sample_sets, int) or self.sample_sets < 1:
            raise BnprobeError(f"sample_sets must be a whole number of at least 1, got {self.sample_sets!r}")
        check_spatial(self.spatial)
        self._check_mode()
        check_choice("study", "checkpoints", self.checkpoints, CHECKPOINT_MODES)
        check_max_device_memory(self.max_device_memory)
        self._check_overrides()
        probes = build_probes(self.probes)  # fail now, not after an hour of training
        comparing = [p.key for p in probes if p.compares_with_reference]
        if comparing and REFERENCE_VARIANT not in self.variants:
            raise BnprobeError(f"probe {comparing[0]} compares each variant with the {REFERENCE_VARIANT} run; "
                               f"add {REFERENCE_VARIANT} to the variants")

    def _check_mode(self) -> None:
        self.weights = run_weights(self.weights)
        given = [name for name, value in (("pretrained", self.pretrained), ("init_weights", self.init_weights),
                                          ("weights", self.weights)) if value]
        if len(given) > 1:
            raise BnprobeError(f"both {given[0]} and {given[1]} give starting weights; give one of them")
        if self.mode is None:
            self.mode = default_mode({"weights": self.weights, "pretrained": self.pretrained,
                                      "init_weights": self.init_weights})
        check_choice("study", "mode", self.mode, STUDY_MODES)
        if self.mode == "probe-only" and INIT_VARIANT in self.variants:
            raise BnprobeError(f"variant {INIT_VARIANT} is the {REFERENCE_VARIANT} model left untrained, and mode "
                               f"probe-only trains nothing, so it would repeat {REFERENCE_VARIANT}; "
                               f"drop {INIT_VARIANT}")
        if self.mode == "scratch" and given:
            raise BnprobeError(f"mode scratch trains from a fresh initialisation, but {given[0]} is given; "
                               "drop it, or use mode fine-tune or probe-only ("
                               + in_words(cli="--fine-tune, --probe-only", python="mode='fine-tune'") + ")")
        if self.weights:
            if self.mode != "probe-only":
                raise BnprobeError(f"weights trained elsewhere are probed as they are, not in mode {self.mode}; "
                                   "use mode probe-only (the default with weights)")
            self._check_weight_grid()
        elif self.mode == "probe-only" and given and self.seeds > 1:
            raise BnprobeError(f"in mode probe-only every seed probes the same {given[0]}, so {self.seeds} seeds "
                               f"would repeat one run; use {option('seeds', 1)}")

    def _check_weight_grid(self) -> None:
        """``weights`` name one file for each variant and seed, and nothing else."""
        grid = [(variant, seed) for variant in self.variants for seed in self.seed_range]
        for variant, seed in grid:
            if run_key(variant, seed) not in self.weights:
                raise BnprobeError(f"no weights for {variant} seed {seed}; give {run_key(variant, seed)}=FILE "
                                   "(a file for every variant and seed)")
        stray = next((key for key in self.weights if split_run_key(key) not in grid), None)
        if stray is not None:
            raise BnprobeError(f"weights {stray} are for a run outside the study ({', '.join(self.variants)}, "
                               f"seeds {describe_seeds(self.seed_range)}); list its variant, or raise seeds")

    @property
    def seed_range(self) -> list[int]:
        """Every seed of the study, ``first_seed`` on."""
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def run_seeds(self) -> list[int]:
        """The seeds this process runs: all of :attr:`seed_range`, or its shard's part."""
        return shard_seeds(self.seed_range, self.shard) if self.shard is not None else self.seed_range

    @property
    def read_files(self) -> list[str]:
        """The files the study reads its starting weights from (kept safe from ``overwrite``)."""
        pretrained = [self.pretrained] if isinstance(self.pretrained, str) else []
        return [p for p in (self.init_weights, *pretrained, *self.weights.values()) if p]

    def _check_overrides(self) -> None:
        overrides = self.overrides
        if not (isinstance(overrides, Mapping) and all(isinstance(v, Mapping) for v in overrides.values())):
            raise BnprobeError("overrides must map a variant to its own settings, e.g. {'identity': {'lr': 0.01}}, "
                               f"got {overrides!r}; settings for every variant go in train=")
        for variant, values in self.overrides.items():
            names = ", ".join(values)
            if variant not in self.variants:
                raise BnprobeError(f"{names} set for variant {variant!r}, which is not in variants "
                                   f"({', '.join(self.variants)})")
            fixed = [name for name in values if name not in PER_VARIANT]
            if fixed:
                raise BnprobeError(f"{fixed[0]} cannot differ between variants; per-variant settings: "
                                   f"{', '.join(PER_VARIANT)}")
            self.train_for(variant)  # validates the values

    @property
    def checkpoint(self) -> str | None:
        """Deprecated name of :attr:`init_weights` (it read as bnprobe's own per-run checkpoints)."""
        _warn_checkpoint_renamed()
        return self.init_weights

    @checkpoint.setter
    def checkpoint(self, value: str | None) -> None:
        _warn_checkpoint_renamed()
        self.init_weights = value

    def train_for(self, variant: str) -> TrainConfig:
        """The training configuration of ``variant``: ``train`` with its overrides applied."""
        return replace(self.train, **self.overrides.get(variant, {}))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["train"] = self.train.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StudyConfig:
        """The config saved in a ``results.json`` (keys it does not know, such as ``samples_probed``, dropped)."""
        known = {f.name for f in fields(cls)}
        data = renamed_config(data)
        values = {k: v for k, v in data.items() if k in known}
        train_fields = {f.name for f in fields(TrainConfig)}
        values["train"] = {k: v for k, v in data.get("train", {}).items() if k in train_fields}  # built on init
        return cls(**values)


def _warn_checkpoint_renamed() -> None:
    warnings.warn("StudyConfig.checkpoint is deprecated and will be removed; use init_weights (the same weights)",
                  FutureWarning, stacklevel=3)


def _accepting_checkpoint(init: Callable[..., None]) -> Callable[..., None]:
    """The dataclass ``__init__`` that also takes ``checkpoint=``, the deprecated name of ``init_weights``.

    A wrapper rather than an ``InitVar``: ``dataclasses.replace`` would read an InitVar back through the
    deprecated attribute and warn on every copy of a config.
    """

    @wraps(init)
    def __init__(self: StudyConfig, *args: Any, checkpoint: str | None = None, **kwargs: Any) -> None:
        if checkpoint is not None:
            _warn_checkpoint_renamed()
            if kwargs.get("init_weights") not in (None, checkpoint):
                raise BnprobeError("both init_weights and its deprecated name checkpoint are given; give init_weights")
            kwargs["init_weights"] = checkpoint
        init(self, *args, **kwargs)

    return __init__


StudyConfig.__init__ = _accepting_checkpoint(StudyConfig.__init__)

def run_key(variant: str, seed: int) -> str:
    """The ``weights`` key of one run: ``identity@1``."""
    return f"{variant}@{seed}"


def split_run_key(key: str) -> tuple[str, int]:
    """``identity@1`` -> ``("identity", 1)``: a ``weights`` key as :func:`run_weights` writes it."""
    variant, _, seed = key.partition("@")
    return variant, int(seed)


def run_weights(weights: Mapping[str, str] | str) -> dict[str, str]:
    """``weights`` with every key as ``VARIANT@SEED`` (a bare ``VARIANT`` is seed 0); a comma list
    ``bn=a.pt,identity@1=c.pt`` is read as on the command line."""
    if isinstance(weights, str):
        pairs = [item.partition("=") for item in split_list(weights)]
        bad = next((key for key, sep, path in pairs if not sep or not path.strip()), None)
        if bad is not None:
            raise BnprobeError(f"weights: cannot read {bad!r}; write VARIANT=FILE or VARIANT@SEED=FILE, "
                               "e.g. bn=a.pt,identity@1=c.pt")
        weights = {key.strip(): path.strip() for key, _, path in pairs}
    if not isinstance(weights, Mapping):
        raise BnprobeError(f"weights must map runs to files, e.g. {{'bn': 'a.pt', 'identity@1': 'c.pt'}}, "
                           f"got {type(weights).__name__}")
    keyed: dict[str, str] = {}
    for key, path in weights.items():
        variant, at, seed = str(key).partition("@")
        if not variant or (at and not seed.isdigit()):
            raise BnprobeError(f"weights key {key!r}: write VARIANT or VARIANT@SEED, e.g. identity@1")
        name = run_key(variant, int(seed) if at else 0)
        if name in keyed:
            raise BnprobeError(f"weights for {name} are given twice; give each run one file")
        keyed[name] = str(path)
    return keyed


RENAMED_FIELDS = {"checkpoint": "init_weights"}
"""Config keys saved under an older name (``results.json`` of earlier versions): old name -> new name."""


def renamed_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config with its keys under today's names, so that older studies still resume and re-probe."""
    return {RENAMED_FIELDS.get(key, key): value for key, value in config.items()}


def _as_train_config(value: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """``train`` as given, or built from a dict of :class:`TrainConfig`'s fields (``{"epochs": 3}``)."""
    if isinstance(value, TrainConfig):
        return value
    if isinstance(value, Mapping):
        known = [f.name for f in fields(TrainConfig)]
        unknown = [name for name in value if name not in known]
        if unknown:
            raise BnprobeError(f"train: unknown setting {unknown[0]!r}; settings: {', '.join(known)}")
        return TrainConfig(**value)
    raise BnprobeError(f"train must be a TrainConfig or a dict of its settings, got {type(value).__name__}")
