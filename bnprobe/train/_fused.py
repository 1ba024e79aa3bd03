"""Fused training: the seeds of one variant trained as one batched model, a step for all at once.

A study is many small trainings of the same architecture with the same hyperparameters, differing
only in the seed.  One step of a small model leaves a GPU mostly idle, so time goes to kernel
launches and the Python loop.  Here the K runs of one variant become one model: their parameters
and buffers are stacked along a new first dimension and ``torch.func.vmap(functional_call(...))``
runs every run's forward and backward in the same kernels.  One optimiser steps the stacked
tensors; SGD, Adam and AdamW are elementwise, so each run's slice moves as it would alone.

**Same science.**  Each run keeps the :class:`bnprobe.train._loop.TrainingRun` it would have alone -- its own
data-order and augmentation generators, seeded from its seed, its own initial weights -- and its
batch is drawn with the same functions as the sequential path (``train_batches``, then ``Augment`` with
that run's generator), at the same batch size.  Each run's loss is its own batch mean; the losses
are summed only to call ``backward`` once, which leaves every run's gradient its own.  BatchNorm
uses batch statistics per run and updates each run's running statistics (batched buffers).
Gradient clipping by global norm is computed per run.  The numbers match a run trained alone up to
float rounding: batched convolutions and matrix products sum in another order (see
``tests/test_fused.py`` for the tolerance).

**Checkpoints.**  After every epoch each run's slice is written back into its own module, optimiser
and schedule, and saved by its ``TrainingRun`` in the format of :mod:`bnprobe.train._state`: a fused run's
checkpoint is the one it would write alone, so ``--resume`` works whichever path a run continues
on.  Runs resumed at different epochs are not fused.

**What is not fused** (:func:`fusion_blocker`, and :class:`FusionUnavailable` from a trial step on
copies before training starts): a single run, a ``DataLoader`` instead of a device-resident split,
several processes (DDP), adaptive gradient clipping (per unit, per run), ``torch.compile`` (it
compiles each run's model), fp16 (one gradient scaler would skip a step for every run when one
overflows), and models that vmap cannot run -- an operation without a batching rule, or anything
random in the forward pass (dropout: a run's draws could not be its own).  Those runs train one
after another with :func:`bnprobe.train.train_model`, exactly as without fusion.

**Batches.**  Without augmentation every run's batch is one slice of its own permutation, so the K
batches are gathered as one ``(K, batch, ...)`` tensor in one indexing operation per step; with
augmentation each run's batch is drawn and augmented with its own generator, then stacked.

**CUDA graphs** (:mod:`bnprobe.train._step_graph`).  On CUDA the fused forward and backward of the full
batch is recorded once into a CUDA graph, after a few eager warm-up steps, and replayed for every
later step: one launch instead of hundreds, and none of vmap's Python per step.  The optimiser step,
schedule and clipping stay eager, and the last, shorter batch of an epoch runs eagerly.  A step that
cannot be recorded falls back to eager steps; ``on_graph`` is told which path the steps took.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from bnprobe._common import first_line
from bnprobe.data._augment import Augment
from bnprobe.data._loaders import Split
from bnprobe.train import _distributed as distributed
from bnprobe.train._loop import (
    EpochCallback,
    StepCallback,
    TrainConfig,
    TrainingRun,
    TrainResult,
    autocast_dtype,
    global_rng_state,
    make_optimizer,
    make_schedule,
    num_batches,
    resolve_device,
    set_global_rng_state,
    timed,
    train_batches,
    train_timings,
)
from bnprobe.train._step_graph import StepGraph


class FusionUnavailable(Exception):
    """These runs cannot be trained fused; the message says why.  Nothing was trained yet."""


@dataclass
class FusedRun:
    """One run of a fused group: its freshly initialised model, its seed and where it checkpoints."""

    model: nn.Module
    seed: int
    checkpoint: Path | None = None
    on_epoch: EpochCallback | None = None
    on_step: StepCallback | None = None


def fusion_blocker(config: TrainConfig, train: object, device: torch.device, runs: int) -> str | None:
    """Why ``runs`` runs of ``config`` on ``train`` cannot be fused, or None when they can be tried.

    A model that vmap cannot run is only found by trying (:func:`train_fused` raises
    :class:`FusionUnavailable`).
    """
    if runs < 2:
        return "a single run: nothing to fuse"
    if not isinstance(train, Split):
        return "the training data is a DataLoader, not a device-resident split"
    if distributed.current_world().size > 1:
        return "several processes (DDP) train each run together"
    if config.agc is not None:
        return "adaptive gradient clipping (agc) is not fused"
    if config.compile:
        return "torch.compile compiles each run's model on its own"
    if autocast_dtype(config.precision, device) is torch.float16:
        return "fp16's gradient scaler would skip a step for every run when one overflows"
    return None


def train_fused(runs: list[FusedRun], train: Split, test: Split | None = None, *, config: TrainConfig,
                device: str | torch.device = "auto", augment: Augment | None = None,
                resume: bool = False, on_start: Callable[[], None] | None = None, cuda_graph: bool = True,
                on_graph: Callable[[str], None] | None = None, recalibrate_bn: bool = False) -> list[TrainResult]:
    """Train every run's model in place, all in one vmapped step; one :class:`TrainResult` per run.

    Each run is trained as :func:`bnprobe.train.train_model` would train it with its seed, augment,
    checkpoint and resume (see the module docstring for what "as" means).  Raises
    :class:`FusionUnavailable`, having trained nothing, when the runs cannot be fused; ``on_start``
    is called once they can, before the first epoch.  ``cuda_graph`` allows replaying the step from a
    CUDA graph (on CUDA only); ``on_graph`` is called after training with how the steps ran, e.g.
    ``"CUDA graph, 9370 of 9380 steps replayed"`` or ``"eager: CUDA graphs need a CUDA device"``.
    ``recalibrate_bn`` recomputes each run's BatchNorm statistics after training, on its own module
    (which holds its final weights and buffers), one run after another as ``train_model`` does.
    """
    started = time.perf_counter()
    device = resolve_device(device)
    blocker = fusion_blocker(config, train, device, len(runs))
    if blocker is not None:
        raise FusionUnavailable(blocker)
    train = train.to(device)
    test = test.to(device) if test is not None else None
    group = _FusedGroup(runs, train, config, device, augment, resume, cuda_graph, test)
    if on_start is not None:
        on_start()
    try:
        while not group.finished:
            group.train_epoch()
    finally:
        summary = group.graph_summary()
        group.graph.release()  # its memory pool holds a whole step's activations
    if on_graph is not None:
        on_graph(summary)
    for index, (run, item) in enumerate(zip(group.runs, group.fused, strict=True)):
        set_global_rng_state(group.global_rng[index], device)  # what its checkpoint records as this run's
        run.after_training(recalibrate_bn, item.checkpoint)
    results = [run.result(test, started, fused_runs=len(group.runs)) for run in group.runs]
    seconds = time.perf_counter() - started
    timings = train_timings(seconds, [group.times, *(run.times for run in group.runs)])
    return [replace(result, seconds=seconds, timings=timings) for result in results]  # each run's is the group's


class _FusedGroup:
    """The stacked state of K runs and the step that advances them together."""

    def __init__(self, fused: list[FusedRun], train: Split, config: TrainConfig, device: torch.device,
                 augment: Augment | None, resume: bool, cuda_graph: bool = True, test: Split | None = None) -> None:
        self.fused, self.train, self.config, self.device, self.test = fused, train, config, device, test
        world = distributed.World()
        for item in fused:
            item.model.to(device)
        self.runs: list[TrainingRun] = []
        self.global_rng: list[dict[str, torch.Tensor]] = []
        """Each run's global generators' state, as its seed (or its checkpoint) set it.  A fused model draws
        nothing from them (vmap runs it with ``randomness="error"``), so the state stays the one a run alone
        would have; it is put back before the run's checkpoint records it."""
        for item in fused:
            run = TrainingRun(item.model, train, config, device, item.seed, augment, world)  # seeds the global RNG
            if resume and item.checkpoint is not None and item.checkpoint.exists():
                run.restore(item.checkpoint)
            self.runs.append(run)
            self.global_rng.append(global_rng_state(device))
        epochs = {run.epoch for run in self.runs}
        if len(epochs) > 1 or any(run.diverged_at_epoch is not None for run in self.runs):
            raise FusionUnavailable("the runs resume from different epochs")
        self.epoch = epochs.pop()
        self.skeleton = copy.deepcopy(fused[0].model).train()
        self.params = {name: torch.stack([dict(run.model.named_parameters())[name].detach() for run in self.runs])
                       .requires_grad_(p.requires_grad) for name, p in self.skeleton.named_parameters()}
        self.buffers = {name: torch.stack([dict(run.model.named_buffers())[name] for run in self.runs])
                        for name, _ in self.skeleton.named_buffers()}
        self.amp = autocast_dtype(config.precision, device)
        self._step = vmap(self._loss, randomness="error")
        self._trial_step()
        self.graph = StepGraph(partial(self._forward_backward, self.params, self.buffers),
                               list(self.params.values()), device, enabled=cuda_graph)
        self.steps = 0
        self.times: dict[str, float] = {}
        """Seconds of the group's steps (``"steps"``); each run keeps its own saves' and evaluations'."""
        self.optimizer = self._stacked_optimizer()
        self.schedule = make_schedule(self.optimizer, config,
                                      config.epochs * num_batches(train, config.batch_size, world))
        self.optimizer.load_state_dict(_stacked_state([run.optimizer.state_dict() for run in self.runs]))
        self.schedule.load_state_dict(self.runs[0].schedule.state_dict())
        self.active = [True] * len(self.runs)

    @property
    def finished(self) -> bool:
        return not any(self.active) or self.epoch >= self.config.epochs

    def _loss(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One run's mean loss and its predicted classes (vmapped over the runs)."""
        logits = functional_call(self.skeleton, (params, buffers), (x,))
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing)
        return loss, logits.detach().argmax(dim=1)

    def _forward_backward(self, params: dict, buffers: dict, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # No autocast weight cache: a CUDA graph must recompute the casts on every replay.
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None,
                            cache_enabled=False):
            losses, predicted = self._step(params, buffers, x, y)
        losses.sum().backward()  # each run's gradient is its own: d(sum)/d(loss_k) = 1
        return losses.detach(), predicted

    def _trial_step(self) -> None:
        """One step on copies of the buffers and a fixed batch: does vmap run this model?"""
        x, y = self.train.x[:self.config.batch_size], self.train.y[:self.config.batch_size]
        k = len(self.runs)
        try:
            self._forward_backward(self.params, {n: b.clone() for n, b in self.buffers.items()},
                                   x.expand(k, *x.shape).contiguous(), y.expand(k, *y.shape).contiguous())
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            raise FusionUnavailable(f"the model does not run under vmap ({first_line(exc)})") from None
        finally:
            for p in self.params.values():
                p.grad = None

    def _stacked_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of one run, built by :func:`make_optimizer`, pointed at the stacked parameters.

        Building it on a run's module keeps the weight-decay grouping (decided from each parameter's
        own dimensions, not the stacked ones) and every setting of the sequential path.
        """
        stacked = {id(p): self.params[name] for name, p in self.skeleton.named_parameters()}
        optimizer = make_optimizer(self.skeleton, self.config)
        for group in optimizer.param_groups:
            group["params"] = [stacked[id(p)] for p in group["params"]]
        return optimizer

    def train_epoch(self) -> None:
        """One pass over the data for every run, then per-run metrics, checkpoints and callbacks."""
        config, k = self.config, len(self.runs)
        loss_sum = torch.zeros(k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]  # the last step's, once the loop has run
        steps = num_batches(self.train, config.batch_size, distributed.World())
        with timed(self.times, "steps"):
            for step, (x, y) in enumerate(self._stacked_batches(), 1):
                self.optimizer.zero_grad(set_to_none=True)
                losses, predicted = self.graph(x, y)
                self.steps += 1
                if config.grad_clip is not None:
                    self._clip_per_run(config.grad_clip)
                self.optimizer.step()
                lr = self.optimizer.param_groups[0]["lr"]
                self.schedule.step()
                loss_sum += losses * y.shape[1]
                correct += (predicted == y).sum(dim=1)
                count += y.shape[1]
                for item in self.fused:
                    if item.on_step is not None:
                        item.on_step(step, steps, self.epoch + 1)
            losses = [total / max(count, 1) for total in loss_sum.tolist()]  # the epoch's host synchronisation
        self.epoch += 1
        accuracies = [hits / max(count, 1) for hits in correct.tolist()]
        for index, run in enumerate(self.runs):
            if not self.active[index]:
                continue
            record = run.close_epoch(losses[index], accuracies[index], lr)
            self.active[index] = run.diverged_at_epoch is None
            self._write_back(index)
            item = self.fused[index]
            # what ``TrainingRun.save`` records
            own_rng = partial(set_global_rng_state, self.global_rng[index], self.device)
            run.after_epoch(record, self.test, item.checkpoint, item.on_epoch, before_save=own_rng)

    def _stacked_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``(K, batch, ...)`` inputs and ``(K, batch)`` labels, each run's batch its own.

        Every run draws its permutation (and augmentation) from its own generators, as ``train_batches``
        does for a run alone; without augmentation the K batches are one gather from the stacked
        permutations.
        """
        if any(run.augment is not None for run in self.runs):
            streams = [train_batches(self.train, self.config.batch_size, run.order, self.device) for run in self.runs]
            for batches in zip(*streams, strict=True):
                xs = [x if run.augment is None else run.augment(x, run.augment_rng)
                      for run, (x, _) in zip(self.runs, batches, strict=True)]
                yield torch.stack(xs), torch.stack([y for _, y in batches])
            return
        orders = torch.stack([torch.randperm(len(self.train), generator=run.order) for run in self.runs])
        orders = orders.to(self.train.x.device)
        for start in range(0, orders.shape[1], self.config.batch_size):
            idx = orders[:, start:start + self.config.batch_size]
            yield self.train.x[idx], self.train.y[idx]

    def graph_summary(self) -> str:
        """How the steps ran: replayed from a CUDA graph (how many), or eager and why."""
        if self.graph.graphed:
            return f"{self.graph.status}, {self.graph.replays} of {self.steps} steps replayed"
        return self.graph.status

    @torch.no_grad()
    def _clip_per_run(self, max_norm: float) -> None:
        """``clip_grad_norm_`` for each run: its global gradient norm over its own slices."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads], dim=1).norm(dim=1)
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))

    @torch.no_grad()
    def _write_back(self, index: int) -> None:
        """Copy run ``index``'s slice into its module, optimiser and schedule (what ``TrainingRun.save`` saves)."""
        run = self.runs[index]
        for name, p in run.model.named_parameters():
            p.copy_(self.params[name][index])
        for name, b in run.model.named_buffers():
            b.copy_(self.buffers[name][index])
        run.optimizer.load_state_dict(_slice_state(self.optimizer.state_dict(), index))
        run.schedule.load_state_dict(self.schedule.state_dict())


def _slice_state(state: dict, index: int) -> dict:
    """One run's optimiser state out of the stacked one: every per-parameter tensor's slice ``index``.

    Scalars (Adam's ``step``) are shared by all runs and kept whole.  Every tensor is a copy: a view
    would keep (and a checkpoint would save) the whole stacked tensor, and a shared scalar would keep
    counting with the stacked optimiser.
    """
    return {"state": {i: {name: _own(value, index) for name, value in entry.items()}
                      for i, entry in state["state"].items()},
            "param_groups": state["param_groups"]}


def _own(value, index: int):
    """Run ``index``'s copy of one optimiser state entry (see :func:`_slice_state`)."""
    if not torch.is_tensor(value):
        return value
    return (value[index] if value.dim() > 0 else value).clone()


def _stacked_state(states: list[dict]) -> dict:
    """The stacked optimiser's state from the runs' own (fresh or restored) states, which share their groups."""
    stacked = {i: {name: torch.stack([s["state"][i][name] for s in states])
                   if torch.is_tensor(value) and value.dim() > 0 else _own(value, 0)
                   for name, value in entry.items()} for i, entry in states[0]["state"].items()}
    return {"state": stacked, "param_groups": states[0]["param_groups"]}

