"""The training loop: seeded, device-resident, with divergence detection.

When the data are a :class:`bnprobe.data.Split` (the datasets bnprobe loads), the whole split sits
on the training device and batches are slices of a seeded permutation: no DataLoader, no worker
processes, no host synchronisation per step (loss and accuracy accumulate on the device and are read
once per epoch).  A user's own ``DataLoader`` works too, at the loader's pace.

A seed fixes the data order (and anything random inside the model's forward, e.g. dropout); the
initial weights are fixed by the caller, who builds the model under the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bnprobe.data import Split
from bnprobe.errors import BnprobeError
from bnprobe.params import check_choice, check_float, check_int

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_int("train", "epochs", self.epochs, minimum=1)
        check_int("train", "batch_size", self.batch_size, minimum=1)
        check_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        check_float("train", "lr", self.lr, minimum=0.0)
        check_float("train", "weight_decay", self.weight_decay, minimum=0.0)
        check_choice("train", "schedule", self.schedule, SCHEDULES)
        check_float("train", "label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0)
        check_choice("train", "precision", self.precision, PRECISIONS)
        if self.grad_clip is not None:
            check_float("train", "grad_clip", self.grad_clip, minimum=0.0)

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

    def to_dict(self) -> dict:
        return asdict(self)


EpochCallback = Callable[[int, dict], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BnprobeError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise BnprobeError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None means plain fp32)."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _batches(data: Split | Iterable, batch_size: int, generator: torch.Generator,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, Split):
        order = torch.randperm(len(data), generator=generator).to(data.x.device)
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            yield data.x[idx], data.y[idx]
    else:
        for batch in data:
            yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


def _num_batches(data: Split | Iterable, batch_size: int) -> int:
    return math.ceil(len(data) / batch_size) if isinstance(data, Split) else len(data)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named in ``config``; no weight decay on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """Per-step learning-rate schedule over ``steps`` optimiser steps."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(steps, 1))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


@torch.no_grad()
def evaluate(model: nn.Module, data: Split | Iterable, *, device: torch.device, batch_size: int = 512,
             precision: str = "auto") -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (eval mode)."""
    was_training = model.training
    model.eval()
    amp = autocast_dtype(precision, device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    generator = torch.Generator().manual_seed(0)
    try:
        for x, y in _batches(data, batch_size, generator, device):
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
            count += len(y)
    finally:
        model.train(was_training)
    return float(loss_sum) / max(count, 1), float(correct) / max(count, 1)


def train_model(model: nn.Module, train: Split | Iterable, test: Split | Iterable | None = None, *,
                config: TrainConfig | None = None, device: str | torch.device = "auto", seed: int = 0,
                on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train ``model`` in place on ``train``; report train/test accuracy and the final loss.

    A non-finite loss ends the run early with ``diverged_at_epoch`` set (1-based).
    """
    config = config or TrainConfig()
    device = resolve_device(device)
    model.to(device)
    if isinstance(train, Split):
        train = train.to(device)
    if isinstance(test, Split):
        test = test.to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, config.epochs * _num_batches(train, config.batch_size))
    amp = autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    history: list[dict] = []
    diverged = None
    epoch_loss = float("nan")
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count = 0
        for x, y in _batches(train, config.batch_size, generator, device):
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(dim=1) == y).sum()
            count += len(y)
        epoch_loss = float(loss_sum) / max(count, 1)
        record = {"epoch": epoch, "loss": epoch_loss, "accuracy": float(correct) / max(count, 1)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
        if not math.isfinite(epoch_loss):
            diverged = epoch
            break
    train_loss, train_acc = evaluate(model, train, device=device, precision=config.precision)
    test_loss, test_acc = (None, None)
    if test is not None:
        test_loss, test_acc = evaluate(model, test, device=device, precision=config.precision)
    return TrainResult(train_accuracy=train_acc, test_accuracy=test_acc, final_loss=epoch_loss,
                       test_loss=test_loss, epochs_run=len(history), diverged_at_epoch=diverged,
                       history=history)
