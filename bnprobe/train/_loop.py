"""The training loop: seeded, device-resident, resumable, with divergence detection.

**Data.**  When the data are a :class:`bnprobe.data.Split` (the datasets bnprobe loads), the whole
split sits on the training device and batches are slices of a seeded permutation: no DataLoader, no
worker processes, no host synchronisation per step (loss and accuracy accumulate on the device and
are read once per epoch).  ``augment`` (:class:`bnprobe.data.Augment`) transforms each batch there,
drawing from a generator on the device.  A user's own ``DataLoader`` works too, at the loader's pace.

**Speed.**  Mixed precision by autocast (``precision``: ``auto`` is bf16 where the GPU supports it,
fp32 on the CPU; fp16 adds a gradient scaler), fused optimisers on CUDA, the channels-last memory
format (:func:`memory_format`), and ``torch.compile`` when ``compile`` is set.

**Stability without BatchNorm.**  ``grad_clip`` caps the global gradient norm; ``agc`` is adaptive
gradient clipping (Brock et al. 2021, the NFNets paper): each output unit's gradient is scaled down
so its norm is at most ``agc`` times the unit's weight norm (floored at 1e-3).  As in the paper, the
final classifier is not clipped.  A non-finite epoch loss ends the run with ``diverged_at_epoch``.

**Reproducibility.**  A seed fixes the data order, the augmentation and anything random in the
forward pass (dropout); the initial weights are fixed by the caller, who builds the model under the
same seed.  On the CPU the same seed gives bit-identical weights.

**History.**  Every epoch is recorded as ``{"epoch", "loss", "accuracy", "test_accuracy", "lr"}``:
the loss and accuracy are train-mode means over the epoch's (augmented) batches, as the optimiser
saw them; ``test_accuracy`` is measured in eval mode after the epoch (None without a test split) --
for the last epoch it is the final evaluation's, so a one-epoch run makes no extra pass; ``lr`` is
the learning rate of the epoch's last step.  The history is part of the checkpoint.

**BatchNorm statistics** (:mod:`bnprobe.train._bnstats`).  The final evaluation of a model with BatchNorm
also measures its test accuracy with batch statistics (train-mode BatchNorm, running statistics
untouched: :attr:`TrainResult.train_mode_test_accuracy`), so a run whose running statistics lag its
weights shows it (:mod:`bnprobe.train._flags`).  ``recalibrate_bn`` recomputes those statistics over the
training split after the last epoch (:meth:`TrainingRun.after_training`); the final evaluation, the last
epoch's ``test_accuracy`` and the checkpoint then have the recomputed ones.

**Resuming.**  ``checkpoint=PATH`` rewrites the run's whole state (:mod:`bnprobe.train._state`) after
every epoch; ``resume=True`` continues from that file, bit-identically to an uninterrupted run on
the CPU.

**Several processes** (torchrun, see :mod:`bnprobe.train._distributed`).  The model is wrapped in
DistributedDataParallel; every epoch's permutation is cut into one shard per process (the last
``N mod world_size`` samples are left out that epoch) and each step takes ``batch_size / world_size``
samples per process, so the global batch is ``batch_size`` whatever the number of GPUs (a
``DataLoader`` is used as given: shard it with a ``DistributedSampler``).  Only rank 0 writes the
checkpoint; all ranks end with rank 0's weights and BatchNorm statistics.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bnprobe._hints import option
from bnprobe.data._augment import Augment
from bnprobe.data._loaders import Split, inputs_and_labels
from bnprobe.errors import BnprobeError
from bnprobe.models._pretrained import classifier_name
from bnprobe.models._weights import load_state
from bnprobe.params import check_choice, check_float, check_int
from bnprobe.train import _distributed as distributed
from bnprobe.train._bnstats import batch_statistics, batchnorm_layers, cumulative_statistics
from bnprobe.train._state import FORMAT, VERSION, can_continue, first_difference, load_train_state, save_atomic

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PER_VARIANT = ("lr", "momentum", "weight_decay", "label_smoothing", "grad_clip", "agc")
"""Hyperparameters a study may set per variant (``--lr bn=0.1,identity=0.02``)."""
AGC_EPS = 1e-3


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (the same for every variant unless overridden)."""

    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    agc: float | None = None
    precision: str = "auto"
    compile: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        check_int("train", "epochs", self.epochs, minimum=1)
        check_int("train", "batch_size", self.batch_size, minimum=1)
        check_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        check_float("train", "lr", self.lr, positive=True)  # 0 would train nothing
        check_float("train", "momentum", self.momentum, minimum=0.0, maximum=1.0)
        check_float("train", "weight_decay", self.weight_decay, minimum=0.0)
        check_choice("train", "schedule", self.schedule, SCHEDULES)
        check_float("train", "label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0)
        check_choice("train", "precision", self.precision, PRECISIONS)
        if self.grad_clip is not None:  # None, not 0, turns clipping off: 0 would stop every update
            check_float("train", "grad_clip", self.grad_clip, positive=True)
        if self.agc is not None:
            check_float("train", "agc", self.agc, positive=True)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What one training run achieved."""

    train_accuracy: float
    test_accuracy: float | None
    final_loss: float
    test_loss: float | None
    epochs_run: int
    diverged_at_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the training and its final evaluation; for fused runs the whole group's."""
    timings: dict[str, float] = field(default_factory=dict)
    """Where :attr:`seconds` went (:data:`TRAIN_PARTS`): ``steps`` (the optimiser steps), ``saves``
    (per-epoch checkpoints), ``evaluation`` (per-epoch and final passes, and recomputing BatchNorm
    statistics) and ``setup`` (the rest: moving the model, building the optimiser, restoring a
    checkpoint).  For fused runs, like :attr:`seconds`, the whole group's, shared by its ``fused_runs`` runs."""
    fused_runs: int = 1
    """How many runs trained together in one fused model (1: alone)."""
    train_mode_test_accuracy: float | None = None
    """The test accuracy with BatchNorm normalising by batch statistics (train mode), running statistics
    untouched; None for a model without BatchNorm (both modes compute the same), a diverged run, or
    without a test split.  Far above :attr:`test_accuracy`, it says the running statistics lag."""
    recalibrated_bn: bool = False
    """Whether the BatchNorm running statistics were recomputed after training (``recalibrate_bn``)."""

    def to_dict(self) -> dict:
        return asdict(self)


EpochCallback = Callable[[int, dict], None]
StepCallback = Callable[[int, int, int], None]
"""Called after every optimiser step with (step of this epoch, 1-based; steps per epoch; the epoch, 1-based,
counting the epochs a resumed run had already trained)."""
TRAIN_PARTS = ("setup", "steps", "saves", "evaluation")


@contextmanager
def timed(times: dict[str, float], part: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to ``times[part]``.

    On CUDA the parts end with a host synchronisation of their own (metrics read, weights copied), so
    the device's queued work is counted in the part that queued it.
    """
    started = time.perf_counter()
    try:
        yield
    finally:
        times[part] = times.get(part, 0.0) + time.perf_counter() - started


def usable_devices() -> list[str]:
    """The ``device`` values torch can compute on in this process: ``auto``, ``cpu`` and each visible accelerator."""
    usable = ["auto", "cpu"]
    for kind in ("cuda", "xpu"):
        backend = getattr(torch, kind, None)
        count = backend.device_count() if backend is not None and backend.is_available() else 0
        usable += [kind] * bool(count) + [f"{kind}:{index}" for index in range(count)]
    if torch.backends.mps.is_available():
        usable.append("mps")
    return usable


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; any device torch cannot compute on here is a user error.

    Under torchrun a bare ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``).  A device that torch
    names but cannot use here (``mps`` or ``cuda`` without one, ``meta``, which holds no numbers, a
    missing GPU index, a misspelling) is refused before anything is built, in one line listing those it can.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    usable = usable_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or (str(parsed) not in usable and parsed.type != "cpu"):
        why = f" (no {parsed.type.upper() if parsed.type == 'cuda' else parsed.type} device is visible)" \
            if parsed is not None and parsed.type in ("cuda", "xpu", "mps") and parsed.type not in usable else ""
        raise BnprobeError(f"{option('device', str(device))} cannot be used here{why}; torch can use: "
                           f"{', '.join(usable)}")
    return distributed.local_device(parsed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None means plain fp32)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def layout_of(model: nn.Module) -> torch.memory_format:
    """The layout ``model``'s convolution weights are stored in: channels-last, or the default.

    Read off the first 4-D weight whose two layouts differ (a conv with one input channel, or 1x1
    kernels, is stored alike in both)."""
    for weight in (p for p in model.parameters() if p.dim() == 4):
        default, last = weight.is_contiguous(), weight.is_contiguous(memory_format=torch.channels_last)
        if default != last:
            return torch.channels_last if last else torch.contiguous_format
    return torch.contiguous_format


def memory_format(device: torch.device, model: nn.Module | None = None) -> torch.memory_format:
    """The layout ``model``'s weights and image batches take on ``device``: channels-last, which
    tensor-core convolutions want on CUDA and oneDNN runs fastest on the CPU, except on the CPU for a
    model with GroupNorm, whose channels-last backward pass is slower there.

    Measured on the 2-core CPU (docs/benchmarks.md), a training step / an eval pass in channels-last
    against the default layout: cnn4 1.2-1.3x / 1.7-1.9x, VGG-16 1.3x / 1.2x, EfficientNet-B0 2.5x /
    4.5x, resnet18 1.05x / 1.2x -- but resnet18 with GroupNorm 0.83x in training.
    """
    if device.type == "cpu" and model is not None and any(isinstance(m, nn.GroupNorm) for m in model.modules()):
        return torch.contiguous_format
    return torch.channels_last


def _in_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``x`` in ``layout`` when it is a batch of images, contiguous otherwise."""
    return x.contiguous(memory_format=layout) if x.dim() == 4 else x.contiguous()


def derive_seed(seed: int, stream: str, rank: int = 0) -> int:
    """An independent 63-bit seed for one random stream (``augment``) of one process, from ``seed``."""
    digest = hashlib.sha256(f"{seed}/{stream}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def global_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators' state: the CPU's, and the GPU's on CUDA.

    Part of what a checkpoint records (:meth:`TrainingRun.save`); a fused group keeps one per run
    (:mod:`bnprobe.train._fused`), so that each run's checkpoint holds the state it would hold alone.
    """
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_global_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Put back a state from :func:`global_rng_state` (other keys in ``state`` are ignored; a GPU
    state only on CUDA)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def train_batches(data: Split | Iterable, batch_size: int, generator: torch.Generator, device: torch.device,
             world: distributed.World | None = None, even: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of one pass over ``data``: slices of a permutation of a split (``even``: as few
    batches of at most ``batch_size`` as there must be, their sizes within one of each other, so that
    no batch's statistics rest on a few samples), or a loader's batches as it gives them."""
    world = world or distributed.World()
    if isinstance(data, Split):
        order = torch.randperm(len(data), generator=generator).to(data.x.device)
        if world.size > 1:
            order = order[world.rank:len(order) - len(order) % world.size:world.size]
        step = batch_size // world.size
        if even and len(order):
            for idx in order.tensor_split(-(-len(order) // step)):
                yield data.x[idx], data.y[idx]
            return
        for start in range(0, len(order), step):
            idx = order[start:start + step]
            yield data.x[idx], data.y[idx]
    else:
        for batch in data:
            x, y = inputs_and_labels(batch)
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def check_last_batch(model: nn.Module, train: Split | Iterable, batch_size: int, device: torch.device) -> None:
    """Fail in one line, before anything trains, when the last batch of every epoch would hold one
    sample and the model cannot train on one (a BatchNorm layer with a single value per channel).

    A copy of the model takes that step's forward pass in train mode, so the model itself (its
    running statistics) is untouched.
    """
    if not isinstance(train, Split):
        return
    world = distributed.current_world()
    step = batch_size // world.size
    if (len(train) // world.size) % step != 1 and step != 1:
        return
    trial = copy.deepcopy(model).to(device).train()
    try:
        with torch.no_grad():
            trial(train.x[:1].to(device))
    except ValueError as exc:
        other = batch_size - 1 if batch_size > 2 else 8
        raise BnprobeError(f"batch size {batch_size} leaves the last batch of each epoch with 1 of the {len(train)} "
                           f"training samples, and the model cannot train on one ({str(exc).partition(chr(10))[0]}); "
                           f"use a batch size that leaves more, e.g. {other}") from None


def num_batches(data: Split | Iterable, batch_size: int, world: distributed.World) -> int:
    if isinstance(data, Split):
        return math.ceil((len(data) // world.size) / (batch_size // world.size))
    return len(data)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named in ``config``; no weight decay on biases and norm parameters.

    On CUDA the fused implementations are used: faster, and with fp16 they skip steps on overflow
    without a host synchronisation.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if all(p.is_cuda for p in decay + no_decay) and decay + no_decay else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               **fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, **fused)
    return torch.optim.AdamW(groups, lr=config.lr, **fused)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """Per-step learning-rate schedule over ``steps`` optimiser steps."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(steps, 1))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The final classifier's parameters (:func:`bnprobe.models.classifier_name`)."""
    name = classifier_name(model)
    return list(model.get_submodule(name).parameters()) if name is not None else []


def _unitwise_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Norm per output unit (dim 0) of a weight, or of the whole tensor for biases and gains."""
    if tensor.dim() <= 1:
        return torch.linalg.vector_norm(tensor)
    return torch.linalg.vector_norm(tensor, dim=tuple(range(1, tensor.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_(parameters: Iterable[nn.Parameter], clip: float, eps: float = AGC_EPS) -> None:
    """Adaptive gradient clipping in place: ``g <- g * min(1, clip * max(|w|, eps) / |g|)`` per unit."""
    for p in parameters:
        if p.grad is None:
            continue
        max_norm = _unitwise_norm(p).clamp_(min=eps).mul_(clip)
        grad_norm = _unitwise_norm(p.grad)
        p.grad.mul_(torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp(min=1e-6), 1.0))


@torch.no_grad()
def evaluate(model: nn.Module, data: Split | Iterable, *, device: str | torch.device = "auto", batch_size: int = 512,
             precision: str = "auto", batch_stats: bool = False) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (eval mode), on ``device``
    (``auto``, ``cpu``, ``cuda`` or a ``torch.device``; the model must already be there).

    With ``batch_stats`` the BatchNorm layers normalise by each batch's own statistics instead, as in
    training (:func:`bnprobe.train._bnstats.batch_statistics`: their running statistics are left as they
    were), in batches of nearly equal size up to ``batch_size`` -- give the training batch size.
    """
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    amp = autocast_dtype(precision, device)
    layout = memory_format(device, model)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    generator = torch.Generator().manual_seed(0)
    try:
        with batch_statistics(model) if batch_stats else contextlib.nullcontext():
            for x, y in train_batches(data, batch_size, generator, device, even=batch_stats):
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = model(_in_layout(x, layout))
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
                correct += (logits.argmax(dim=1) == y).sum()
                count += len(y)
    finally:
        model.train(was_training)
    return float(loss_sum) / max(count, 1), float(correct) / max(count, 1)


class TrainingRun:
    """The moving parts of one training run: what an epoch advances and a checkpoint saves."""

    def __init__(self, model: nn.Module, train: Split | Iterable, config: TrainConfig, device: torch.device,
                 seed: int, augment: Augment | None, world: distributed.World, epochs: int | None = None) -> None:
        self.model, self.train, self.config, self.device, self.world = model, train, config, device, world
        self.epochs = config.epochs if epochs is None else epochs
        """How many epochs this run trains (``config.epochs`` unless told; 0 only evaluates)."""
        self.augment = augment if augment is not None and augment.active else None
        torch.manual_seed(seed)
        self.order = torch.Generator().manual_seed(seed)
        self.augment_rng = torch.Generator(device=device).manual_seed(derive_seed(seed, "augment", world.rank))
        self.optimizer = make_optimizer(model, config)
        self.schedule = make_schedule(self.optimizer, config,
                                      config.epochs * num_batches(train, config.batch_size, world))
        self.amp = autocast_dtype(config.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        head = {id(p) for p in classifier_parameters(model)}
        self.agc_params = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
        self.epoch = 0
        self.history: list[dict] = []
        self.diverged_at_epoch: int | None = None
        self.net: nn.Module = model
        self.recalibrated = False
        """Whether the BatchNorm statistics were recomputed after training (here, or before the checkpoint)."""
        self.times: dict[str, float] = {}
        """Seconds spent per part of :data:`TRAIN_PARTS` but ``setup`` (derived from the total)."""

    @property
    def finished(self) -> bool:
        return self.epoch >= self.epochs or self.diverged_at_epoch is not None

    def prepare(self) -> None:
        """Wrap the model for training: DDP across processes, then ``torch.compile`` if asked."""
        net = self.model
        if self.world.size > 1:
            net = distributed.wrap(net, self.device, self.config.sync_bn)
        self.net = torch.compile(net) if self.config.compile else net

    def train_epoch(self, on_step: StepCallback | None = None) -> dict:
        """One pass over the data; the metrics are read from the device once, at the end.

        ``on_step`` hears of each step without reading anything from the device (progress displays)."""
        config, device = self.config, self.device
        layout = memory_format(device, self.model)
        self.net.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]  # the last step's, once the loop has run
        steps = num_batches(self.train, config.batch_size, self.world)
        with timed(self.times, "steps"):
            batches = train_batches(self.train, config.batch_size, self.order, device, self.world)
            for step, (x, y) in enumerate(batches, 1):
                if self.augment is not None:
                    x = self.augment(x, self.augment_rng)
                with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    logits = self.net(_in_layout(x, layout))
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if config.grad_clip is not None or config.agc is not None:
                    self.scaler.unscale_(self.optimizer)
                    if config.agc is not None:
                        adaptive_clip_(self.agc_params, config.agc)
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                lr = self.optimizer.param_groups[0]["lr"]
                self.schedule.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(dim=1) == y).sum()
                count += len(y)
                if on_step is not None:
                    on_step(step, steps, self.epoch + 1)
            loss = float(loss_sum) / max(count, 1)  # the epoch's one host synchronisation
        return self.close_epoch(loss, float(correct) / max(count, 1), lr)

    def close_epoch(self, loss: float, accuracy: float, lr: float) -> dict:
        """Count an epoch trained with these train-mode means and last learning rate: its record, added
        to the history, and the divergence check (a non-finite loss ends the run)."""
        self.epoch += 1
        record = epoch_record(self.epoch, loss, accuracy, lr)
        self.history.append(record)
        if not math.isfinite(loss):
            self.diverged_at_epoch = self.epoch
        return record

    def after_epoch(self, record: dict, test: Split | Iterable | None, path: Path | None,
                    on_epoch: EpochCallback | None, before_save: Callable[[], None] | None = None) -> None:
        """What follows an epoch: the test accuracy (:meth:`evaluate_epoch`), the checkpoint at ``path``
        (after ``before_save``, when given), then ``on_epoch``."""
        self.evaluate_epoch(record, test)
        if path is not None:
            if before_save is not None:
                before_save()
            self.save(path)
        if on_epoch is not None:
            on_epoch(record["epoch"], record)

    def evaluate_epoch(self, record: dict, test: Split | Iterable | None) -> None:
        """Put the test accuracy after this epoch into ``record``, unless the run is finished: then the
        final evaluation (:meth:`result`) gives it, and no pass is spent twice."""
        if test is not None and not self.finished:
            with timed(self.times, "evaluation"):
                record["test_accuracy"] = evaluate(self.model, test, device=self.device,
                                                   precision=self.config.precision)[1]

    def after_training(self, recalibrate_bn: bool, path: Path | None) -> None:
        """Recompute the BatchNorm running statistics once training is done, when ``recalibrate_bn``
        asks (precise BN, :func:`bnprobe.train._bnstats.cumulative_statistics`), and save them to ``path``.

        One pass over the whole training split without augmentation (the inputs eval mode sees), in a
        fixed order and batches of nearly equal size up to the training batch size; in the training
        precision.  Diverged runs and models without BatchNorm running statistics are left as they are.
        A checkpoint whose statistics were recomputed is refused when ``recalibrate_bn`` is off: the
        statistics training left are gone from it.
        """
        if not recalibrate_bn:
            if self.recalibrated:
                raise BnprobeError(f"checkpoint {path} holds BatchNorm statistics recomputed after training "
                                   f"(recalibrate_bn); resume with {option('recalibrate_bn')}, or delete it to "
                                   "train again")
            return
        if self.diverged_at_epoch is not None or not batchnorm_layers(self.model):
            return
        layout = memory_format(self.device, self.model)
        generator = torch.Generator().manual_seed(0)
        with timed(self.times, "evaluation"), torch.no_grad(), cumulative_statistics(self.model):
            for x, _ in train_batches(self.train, self.config.batch_size, generator, self.device, even=True):
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    self.model(_in_layout(x, layout))
        self.recalibrated = True
        if path is not None:
            self.save(path)

    def result(self, test: Split | Iterable | None, started: float, fused_runs: int = 1) -> TrainResult:
        """Evaluate the trained model on ``self.train`` and ``test`` (eval mode; on ``test`` also with
        batch statistics, for a model with BatchNorm) and file the run, timed from ``started`` (a
        ``time.perf_counter()``)."""
        with timed(self.times, "evaluation"):
            train_loss, train_acc = evaluate(self.model, self.train, device=self.device,
                                             precision=self.config.precision)
            test_loss, test_acc, batch_stats_acc = (None, None, None)
            if test is not None:
                test_loss, test_acc = evaluate(self.model, test, device=self.device, precision=self.config.precision)
                if batchnorm_layers(self.model) and self.diverged_at_epoch is None:
                    batch_stats_acc = evaluate(self.model, test, device=self.device, batch_size=self.config.batch_size,
                                               precision=self.config.precision, batch_stats=True)[1]
        if self.history and self.history[-1].get("test_accuracy") is None:
            self.history[-1]["test_accuracy"] = test_acc
        seconds = time.perf_counter() - started
        final_loss = self.history[-1]["loss"] if self.history else math.nan  # nothing trained: no train loss
        return TrainResult(train_accuracy=train_acc, test_accuracy=test_acc, final_loss=final_loss,
                           test_loss=test_loss, epochs_run=len(self.history), diverged_at_epoch=self.diverged_at_epoch,
                           history=self.history, seconds=seconds, fused_runs=fused_runs,
                           timings=train_timings(seconds, [self.times]), train_mode_test_accuracy=batch_stats_acc,
                           recalibrated_bn=self.recalibrated)

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {"order": self.order.get_state(), "augment": self.augment_rng.get_state(),
                **global_rng_state(self.device)}

    def save(self, path: Path) -> None:
        """Write the state to ``path`` (rank 0; every rank contributes its random generators)."""
        with timed(self.times, "saves"):
            rng = distributed.all_gather(self.rng_state())
            if not self.world.is_main:
                return
            save_atomic({"format": FORMAT, "version": VERSION, "epoch": self.epoch,
                         "diverged_at_epoch": self.diverged_at_epoch, "history": self.history,
                         "config": self.config.to_dict(), "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                         "scaler": self.scaler.state_dict(), "rng": rng, "recalibrated_bn": self.recalibrated}, path)

    def restore(self, path: Path) -> None:
        """Continue from the state saved at ``path`` by a run with the same config and process count.

        A finished run's file may hold its final weights only (:func:`bnprobe.train.keep_final_weights`):
        they are all that evaluating it again needs.
        """
        state = load_train_state(path)
        difference = first_difference(state["config"], self.config.to_dict(), ignore=("compile",))
        if difference is not None:
            raise BnprobeError(f"checkpoint {path} was trained with another config ({difference}); "
                               "use the same options or delete the checkpoint")
        if can_continue(state) and len(state["rng"]) != self.world.size:
            raise BnprobeError(f"checkpoint {path} was written by {len(state['rng'])} processes, this run has "
                               f"{self.world.size}; resume with the same number")
        load_state(self.model, state["model"], f"checkpoint {path} holds another model's weights ({{why}}); "
                   "delete it, or resume in the folder of the study that wrote it")
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.diverged_at_epoch = state["diverged_at_epoch"]
        self.recalibrated = bool(state.get("recalibrated_bn", False))  # written before it existed: not recalibrated
        if not can_continue(state):  # final weights only: enough for a finished run, which trains no more
            if not self.finished:
                raise BnprobeError(f"checkpoint {path} keeps final weights only ({option('checkpoints', 'final')}), "
                                   "not the state to continue training from; delete it to train that run again")
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"][self.world.rank]
        self.order.set_state(rng["order"])
        self.augment_rng.set_state(rng["augment"])
        set_global_rng_state(rng, self.device)


def train_timings(seconds: float, times: Iterable[dict[str, float]]) -> dict[str, float]:
    """:attr:`TrainResult.timings` of ``seconds`` of training whose timed parts are the sums of ``times``
    (one dict per run, or a fused group's and each of its runs'); ``setup`` is what is left."""
    parts = {part: 0.0 for part in TRAIN_PARTS[1:]}
    for timed_parts in times:
        for part, value in timed_parts.items():
            parts[part] += value
    return {"setup": max(seconds - sum(parts.values()), 0.0), **parts}


def epoch_record(epoch: int, loss: float, accuracy: float, lr: float) -> dict:
    """One epoch's entry in a run's history (module docstring); ``test_accuracy`` is filled in later."""
    return {"epoch": epoch, "loss": loss, "accuracy": accuracy, "test_accuracy": None, "lr": lr}


def train_model(model: nn.Module, train: Split | Iterable, test: Split | Iterable | None = None, *,
                config: TrainConfig | None = None, device: str | torch.device = "auto", seed: int = 0,
                on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None,
                augment: Augment | None = None,
                checkpoint: str | os.PathLike | None = None, resume: bool = False,
                recalibrate_bn: bool = False, evaluate_only: bool = False) -> TrainResult:
    """Train ``model`` in place on ``train``; report train/test accuracy and the final loss.

    It trains and evaluates in the layout :func:`memory_format` picks, and hands the model back in the
    layout it came in, so that a capture of it computes what a capture of its reloaded weights does.

    ``augment`` transforms each training batch on the device.  ``on_step`` is called after every
    step (:data:`StepCallback`).  ``checkpoint`` is a file rewritten after every epoch (before
    ``on_epoch`` is called); with ``resume`` an existing one is continued
    from, so a finished run is only evaluated.  A non-finite loss ends the run early with
    ``diverged_at_epoch`` set (1-based).  ``recalibrate_bn`` recomputes the BatchNorm running
    statistics after training, before the final evaluation (:meth:`TrainingRun.after_training`); the
    checkpoint then holds them.  ``evaluate_only`` trains nothing and evaluates ``model`` as it is (a
    ``probe-only`` study), with no train loss to report; the checkpoint then holds the weights evaluated.
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    device = resolve_device(device)
    world = distributed.current_world()
    if world.size > 1 and config.batch_size % world.size:
        raise BnprobeError(f"batch size {config.batch_size} does not split evenly over {world.size} processes; "
                           f"use a multiple of {world.size}")
    if config.sync_bn and world.size > 1 and device.type != "cuda":
        raise BnprobeError(f"sync_bn needs CUDA GPUs; drop {option('sync_bn')} when training on CPU processes")
    check_last_batch(model, train, config.batch_size, device)
    given = layout_of(model)
    model.to(device, memory_format=memory_format(device, model))
    try:
        if isinstance(train, Split):
            train = train.to(device)
        if isinstance(test, Split):
            test = test.to(device)
        run = TrainingRun(model, train, config, device, seed, augment, world, epochs=0 if evaluate_only else None)
        path = Path(checkpoint) if checkpoint is not None else None
        if resume and path is not None and path.exists() and run.epochs:
            run.restore(path)
        run.prepare()
        while not run.finished:
            run.after_epoch(run.train_epoch(on_step), test, path, on_epoch)
        run.after_training(recalibrate_bn, path)
        if not run.epochs and path is not None:
            run.save(path)
        distributed.broadcast_buffers(model)
        return run.result(test, started)
    finally:
        model.to(memory_format=given)  # the same weights probe alike, however they were trained
