"""Training throughput: bnprobe's trainer against a plain loop and against a DataLoader pipeline.

Goals (issue 6), measured in one process on the same model, batch, precision, optimiser and
augmentation (random crop with reflect padding of an eighth of the size, horizontal flip):

* (a) ``bnprobe.train_model`` on a device-resident split >= 0.95x a plain hand-written loop over the
  same device-resident tensors (the trainer adds no overhead);
* (b) ``bnprobe.train_model`` >= 2x a loop fed by a standard torchvision-style ``DataLoader``: a
  dataset that, like ``torchvision.datasets.CIFAR10``/``MNIST``, keeps uint8 images and makes a PIL
  image of each in ``__getitem__``, with ``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor`` and
  ``Normalize`` transforms, ``shuffle=True``, ``--workers`` worker processes and ``pin_memory`` on CUDA.
  A ``DataLoader(TensorDataset)`` over pre-normalised tensors without augmentation is shown too, for
  reference (no ratio goal: it does less work).

The data are random images (no files needed).  Every loop runs ``--warmup`` untimed steps, then
``--steps`` timed ones, with ``torch.cuda.synchronize()`` around the timed part on a GPU; the trainer
runs one untimed epoch of ``--steps`` batches and one timed epoch, timed between its per-epoch
callbacks (which come after its one host synchronisation per epoch).  The loops take turns for
``--repeats`` rounds and each reports its best round, so load from other processes on a shared
machine does not favour whichever loop ran at a quiet moment.  Keep every timed loop over a second
(``--steps``): on a GPU a small model's step takes milliseconds, and a 0.2 s window swings by 20 %.

    python bench/train_throughput.py --steps 10 --batch-size 128          # cnn4, 28x28, on a CPU
    python bench/train_throughput.py --device cuda --models resnet18,vgg16_cifar --image-size 32 \\
        --batch-size 512

Prints one table row per loop and the two ratios per model with PASS/FAIL; exit code 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnprobe.data import Augment, Split
from bnprobe.models import create_model
from bnprobe.train._loop import (
    TrainConfig,
    autocast_dtype,
    make_optimizer,
    make_schedule,
    memory_format,
    resolve_device,
    train_model,
)

GREY_MODELS = {"cnn4"}
GOAL_PLAIN = 0.95
GOAL_LOADER = 2.0


class PilImages(torch.utils.data.Dataset):
    """uint8 images served the way torchvision's CIFAR10/MNIST datasets serve them: PIL, then transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        image = self.images[index]
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return self.transform(pil), int(self.labels[index])


def _fresh_model(name: str, channels: int, device: torch.device, compile_: bool) -> tuple[nn.Module, nn.Module]:
    """The model under seed 0 on ``device`` (channels-last on CUDA), and what to call: compiled or not."""
    torch.manual_seed(0)
    base, _, options = name.partition(":")  # "cnn4:width=8" passes width=8 to the model's builder
    kwargs = {k: int(v) for k, v in (item.split("=") for item in options.split(",") if item)}
    model = create_model(base, num_classes=10, in_chans=channels, **kwargs)
    model = model.to(device, memory_format=memory_format(device))
    return model, torch.compile(model) if compile_ else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_loop(name: str, batches: Callable[[], object], config: TrainConfig, channels: int,
               device: torch.device, args: argparse.Namespace) -> float:
    """Images/s of a hand-written training loop over ``batches()`` (an iterator of on-device batches)."""
    model, net = _fresh_model(name, channels, device, config.compile)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config, args.warmup + args.steps)
    amp = autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    layout = memory_format(device)
    model.train()
    iterator = iter(batches())
    started = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            started = time.perf_counter()
        x, y = next(iterator)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(net(x.contiguous(memory_format=layout)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    _sync(device)
    return args.steps * config.batch_size / (time.perf_counter() - started)


def _time_bnprobe(name: str, split: Split, augment: Augment, config: TrainConfig, channels: int,
                  device: torch.device) -> float:
    """Images/s of ``bnprobe.train_model``: its second epoch, between the two epoch callbacks."""
    model, _ = _fresh_model(name, channels, device, False)
    stamps: list[float] = []
    train_model(model, split, config=replace(config, epochs=2), device=device,
                augment=augment, on_epoch=lambda _epoch, _metrics: stamps.append(time.perf_counter()))
    return len(split) / (stamps[1] - stamps[0])


def _device_batches(split: Split, augment: Augment, batch: int, device: torch.device):
    """The plain loop's data: a seeded permutation of the on-device split, augmented on the device."""
    order_rng = torch.Generator().manual_seed(0)
    augment_rng = torch.Generator(device=device).manual_seed(1)
    while True:
        order = torch.randperm(len(split), generator=order_rng).to(device)
        for start in range(0, len(order) - batch + 1, batch):
            idx = order[start:start + batch]
            yield augment(split.x[idx], augment_rng), split.y[idx]


def _loader_batches(loader: torch.utils.data.DataLoader, device: torch.device):
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[tuple[str, float]]:
    """(loop, images/s) for every loop on model ``name``."""
    import torchvision.transforms as T

    channels = 1 if name in GREY_MODELS else 3
    size, batch = args.image_size, args.batch_size
    n = (args.warmup + args.steps) * batch
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))
    normalised = (pixels - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    labels_t = torch.from_numpy(labels)
    split = Split(normalised[:args.steps * batch], labels_t[:args.steps * batch]).to(device)
    augment = Augment.for_size(size, flip=True)
    config = TrainConfig(batch_size=batch, precision=args.precision, compile=args.compile)
    pin = device.type == "cuda"
    transform = T.Compose([T.RandomCrop(size, padding=augment.pad, padding_mode="reflect"), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(mean.tolist(), std.tolist())])
    loader_kwargs = {"batch_size": batch, "shuffle": True, "num_workers": args.workers, "pin_memory": pin,
                     "drop_last": True}
    pil_loader = torch.utils.data.DataLoader(PilImages(images, labels, transform), **loader_kwargs)
    tensor_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(normalised, labels_t), **loader_kwargs)
    loops: dict[str, Callable[[], float]] = {
        "bnprobe train_model": lambda: _time_bnprobe(name, split, augment, config, channels, device),
        "plain loop, device tensors": lambda: _time_loop(
            name, lambda: _device_batches(split, augment, batch, device), config, channels, device, args),
        f"DataLoader(torchvision-style, {args.workers} workers)": lambda: _time_loop(
            name, lambda: _loader_batches(pil_loader, device), config, channels, device, args),
        f"DataLoader(TensorDataset, {args.workers} workers, no aug)": lambda: _time_loop(
            name, lambda: _loader_batches(tensor_loader, device), config, channels, device, args),
    }
    best = dict.fromkeys(loops, 0.0)
    for _ in range(args.repeats):
        for loop, measure in loops.items():
            best[loop] = max(best[loop], measure())
    return list(best.items())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--models", default="cnn4", help="comma list of model names (bnprobe, timm, tv:); "
                        "integer builder options after a colon, e.g. 'cnn4:width=8'")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per loop (keep each loop over 1 s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each loop reports its best")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every loop")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    compiled = ", compiled" if args.compile else ""
    print(f"device {name}; batch {args.batch_size}, {args.image_size}x{args.image_size}, precision {args.precision}, "
          f"{args.steps} timed steps after {args.warmup}, best of {args.repeats}{compiled}\n", flush=True)
    print(f"{'model':14s} {'loop':48s} {'images/s':>10s}")
    failed = False
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows = bench_model(model, args, device)
        for loop, rate in rows:
            print(f"{model:14s} {loop:48s} {rate:10.0f}", flush=True)
        ours, plain, loader, tensors = (rate for _, rate in rows)
        for what, ratio, goal in (("plain loop", ours / plain, GOAL_PLAIN),
                                  ("torchvision-style DataLoader", ours / loader, GOAL_LOADER)):
            verdict = "PASS" if ratio >= goal else "FAIL"
            failed |= verdict == "FAIL"
            print(f"{'':14s} bnprobe / {what}: {ratio:.2f}x (goal >= {goal:g}x) {verdict}")
        print(f"{'':14s} bnprobe / DataLoader(TensorDataset, no aug): {ours / tensors:.2f}x (for reference)\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
