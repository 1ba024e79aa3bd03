"""A study: variants x seeds -> train -> capture -> probes -> :class:`Results`.

For each seed the model is built once under that seed and every variant is made from a copy of it
(swap after init), so all variants of a seed start from the same conv/linear weights, train with the
same hyperparameters and data order, and are probed on the same training samples.  The ``bn``
variant of a seed is the reference that comparison probes (e.g. CKA) read.

``results.json`` is rewritten atomically after every run, so an interrupted study keeps what it
finished.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from bnprobe.capture import DEFAULT_MAX_MEMORY, CaptureResult, capture, check_spatial
from bnprobe.data import Dataset, Split, adapt_channels, load_dataset
from bnprobe.errors import BnprobeError, NoBatchNormError, UnknownNameError
from bnprobe.models import create_model, input_channels
from bnprobe.probes.base import Probe, ProbeContext, build_probes
from bnprobe.probes.runner import run_probes
from bnprobe.results import Results, RunResult
from bnprobe.surgery import SwapReport, has_batchnorm, list_targets, make_variant
from bnprobe.train import TrainConfig, TrainResult, resolve_device, train_model

REFERENCE_VARIANT = "bn"
PROBE_SAMPLE_SEED = 20250101
"""Seed of the permutation that picks the probed training samples (the same for every run)."""


@dataclass
class StudyConfig:
    """Everything that defines a study; ``bnprobe run`` fills it from its options."""

    model: str
    dataset: str = "digits"
    variants: Sequence[str] = ("bn", "identity", "groupnorm")
    seeds: int = 1
    samples: int = 5000
    probes: Sequence[str] = ("sparsity", "hdbscan")
    device: str = "auto"
    data_root: str | None = None
    layers: str = "act"
    spatial: str = "flatten"
    max_memory: int | None = DEFAULT_MAX_MEMORY
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.variants = list(self.variants)
        self.probes = list(self.probes)
        valid = [REFERENCE_VARIANT, *list_targets()]
        for variant in self.variants:
            base = variant.split(":")[0].split("+")[0]
            if base not in valid:
                raise UnknownNameError(f"unknown variant {variant!r}; valid variants: {', '.join(valid)}")
        if not self.variants:
            raise BnprobeError("no variants given; list at least one, e.g. bn,identity")
        if len(set(self.variants)) != len(self.variants):
            raise BnprobeError("a variant is listed twice; give each variant once")
        if self.seeds < 1:
            raise BnprobeError(f"seeds must be at least 1, got {self.seeds}")
        if self.samples < 1:
            raise BnprobeError(f"samples must be at least 1, got {self.samples}")
        check_spatial(self.spatial)
        build_probes(self.probes)  # fail now, not after an hour of training

    def to_dict(self) -> dict:
        data = asdict(self)
        data["train"] = self.train.to_dict()
        return data


class StudyListener:
    """Hooks a front end overrides to show progress; every method is optional."""

    def study_started(self, total_runs: int) -> None: ...
    def variant_made(self, variant: str, seed: int, report: SwapReport) -> None: ...
    def training_started(self, variant: str, seed: int, epochs: int) -> None: ...
    def epoch_done(self, variant: str, seed: int, epoch: int, metrics: dict) -> None: ...
    def probing_started(self, variant: str, seed: int, steps: int) -> None: ...
    def probe_step(self, variant: str, seed: int, probe: str, layer: str) -> None: ...
    def run_done(self, run: RunResult, seconds: float) -> None: ...


ModelSource = str | nn.Module | Callable[[], nn.Module]


def build_seeded_model(source: ModelSource, seed: int, dataset: Dataset) -> nn.Module:
    """The freshly initialised model for ``seed``.

    A name goes through :func:`bnprobe.models.create_model`; a callable is called; a module is copied
    and every submodule with ``reset_parameters`` re-initialised, all under ``torch.manual_seed(seed)``.
    """
    torch.manual_seed(seed)
    if isinstance(source, str):
        return create_model(source, num_classes=dataset.num_classes, in_chans=dataset.channels)
    if isinstance(source, nn.Module):
        model = copy.deepcopy(source)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model
    return source()


def probe_subset(split: Split, samples: int) -> Split:
    """The first ``samples`` of a fixed permutation of ``split``: the same samples for every run."""
    n = min(samples, len(split))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(PROBE_SAMPLE_SEED))[:n]
    order = order.to(split.x.device)
    return Split(split.x[order], split.y[order])


def prepare_dataset(config: StudyConfig) -> Dataset:
    """Load the study's dataset with the channel count its model takes."""
    dataset = load_dataset(config.dataset, data_root=config.data_root)
    return adapt_channels(dataset, input_channels(config.model, dataset.channels))


def run_study(config: StudyConfig, *, out: str | Path | None = None, model: ModelSource | None = None,
              dataset: Dataset | None = None, listener: StudyListener | None = None) -> Results:
    """Run every variant under every seed, probe each run, and return (and save) the results.

    ``model`` and ``dataset`` override ``config.model`` / ``config.dataset`` with a user's own module
    (or factory) and data; ``out`` is the folder for ``results.json`` and capture caches.
    """
    listener = listener or StudyListener()
    dataset = dataset if dataset is not None else prepare_dataset(config)
    source: ModelSource = model if model is not None else config.model
    device = resolve_device(config.device)
    probes = build_probes(config.probes)
    out_dir = Path(out) if out is not None else None
    probe_split = probe_subset(dataset.train, config.samples)
    results = Results(model=config.model if isinstance(source, str) else type(source).__name__,
                      dataset=dataset.name, config={**config.to_dict(), "device": str(device),
                                                    "samples_probed": len(probe_split)})
    first = build_seeded_model(source, 0, dataset)
    if not has_batchnorm(first):
        raise NoBatchNormError(f"model {results.model} has no BatchNorm layer: there is nothing to compare; "
                               "pick a CNN with BatchNorm")
    listener.study_started(config.seeds * len(config.variants))
    for seed in range(config.seeds):
        base = first if seed == 0 else build_seeded_model(source, seed, dataset)
        reference: CaptureResult | None = None
        for variant in config.variants:
            started = time.perf_counter()
            model_v, report = make_variant(base, variant)
            listener.variant_made(variant, seed, report)
            run, captured = _train_and_probe(model_v, variant, seed, report, dataset, probe_split, probes,
                                             config, device, reference, out_dir, listener)
            if variant == REFERENCE_VARIANT:
                reference = captured
            results.runs.append(run)
            if not results.layers:
                results.layers = captured.names
            if out_dir is not None:
                results.save(out_dir)
            listener.run_done(run, time.perf_counter() - started)
        if out_dir is not None:
            shutil.rmtree(out_dir / "cache", ignore_errors=True)
    return results


def _train_and_probe(model: nn.Module, variant: str, seed: int, report: SwapReport, dataset: Dataset,
                     probe_split: Split, probes: list[Probe], config: StudyConfig, device: torch.device,
                     reference: CaptureResult | None, out_dir: Path | None,
                     listener: StudyListener) -> tuple[RunResult, CaptureResult]:
    listener.training_started(variant, seed, config.train.epochs)
    trained: TrainResult = train_model(
        model, dataset.train, dataset.test, config=config.train, device=device, seed=seed,
        on_epoch=lambda epoch, metrics: listener.epoch_done(variant, seed, epoch, metrics))
    cache_dir = out_dir / "cache" / f"{variant}-seed{seed}" if out_dir is not None else None
    captured = capture(model, probe_split, layers=config.layers, probes=probes, spatial=config.spatial,
                       max_memory=config.max_memory, cache_dir=cache_dir, device=device)
    context = ProbeContext(model=model, inputs=probe_split.x.cpu(), labels=probe_split.y.cpu(), device=device,
                           variant=variant, seed=seed, layer_modules=captured.modules,
                           reference=_lookup(reference))
    steps = sum(1 if p.scope == "model" else len(captured) for p in probes)
    listener.probing_started(variant, seed, steps)
    outcome = run_probes(captured, probes, context,
                         on_step=lambda probe, layer: listener.probe_step(variant, seed, probe, layer))
    run = RunResult(variant=variant, seed=seed, train_accuracy=trained.train_accuracy,
                    test_accuracy=trained.test_accuracy, final_loss=_finite(trained.final_loss),
                    test_loss=trained.test_loss, epochs_run=trained.epochs_run,
                    diverged_at_epoch=trained.diverged_at_epoch, swap=report.to_dict(),
                    probes=outcome.values, failures=[f.to_dict() for f in outcome.failures])
    return run, captured


def _lookup(reference: CaptureResult | None):
    def find(name: str):
        if reference is None:
            return None
        try:
            return reference[name]
        except KeyError:
            return None
    return find


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None
