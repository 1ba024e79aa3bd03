"""A whole study's wall time: a plain sequential loop against ``bnprobe.run_study`` (issue 9).

The MNIST-shaped study of the paper -- ``cnn4``, seeds x {bn, identity}, batch 64, AdamW with a
cosine schedule, probes (sparsity, hdbscan) on the first ``--samples`` training samples -- run twice
in one process on random data of MNIST's shape (28x28 grey, 10 classes):

* **plain**: the loop one would write by hand: for each seed and variant, build the model under the
  seed, train it step by step (seeded permutation, one optimiser step per batch), evaluate it on the
  training and test sets, then capture its activations and run the probes, one run after another;
* **bnprobe**: ``run_study`` on the same data and settings, with ``--fuse`` (``auto``: fused
  training on CUDA only, as in ``bnprobe run``; there each fused step is replayed from a CUDA
  graph) and ``--probe-workers`` (``auto``: one HDBSCAN worker per core but one, from 4 cores),
  writing its usual output folder.  It prints how each variant trained and how its steps ran.

Both run after one untimed warm-up step, bnprobe first.  Prints both wall times and plain / bnprobe
(above 1: bnprobe is faster).  ``--quick`` shrinks the study so it runs in a minute or two on a CPU:

    python bench/study_speed.py --quick --device cpu
    python bench/study_speed.py --device cuda            # 4 seeds x 10 epochs, 60,000 samples
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from bnprobe.capture import capture
from bnprobe.data import Dataset, Split
from bnprobe.models import create_model
from bnprobe.probes.base import build_probes
from bnprobe.probes.runner import run_probes
from bnprobe.study import StudyConfig, StudyListener, probe_subset, run_study
from bnprobe.surgery import make_variant
from bnprobe.train import TrainConfig, evaluate, make_optimizer, make_schedule, resolve_device

VARIANTS = ("bn", "identity")
GPU_GOAL_SECONDS = 30.0
GPU_GOAL_RATIO = 5.0
PROBES = ("sparsity", "hdbscan")


def mnist_shaped(train: int, test: int) -> Dataset:
    """Random images of MNIST's shape with labels that a CNN can partly learn (a class-dependent mean)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (train + test,), generator=g)
    images = torch.randn(10, 1, 28, 28, generator=g)[labels] + torch.randn(train + test, 1, 28, 28, generator=g)
    return Dataset("mnist-shaped", Split(images[:train], labels[:train]), Split(images[train:], labels[train:]), 10)


def plain_study(dataset: Dataset, config: TrainConfig, seeds: int, samples: int, device: torch.device) -> None:
    """Every run one after another, trained by a hand-written loop, then captured and probed."""
    train = dataset.train.to(device)
    probed = probe_subset(train, samples)
    for seed in range(seeds):
        torch.manual_seed(seed)
        base = create_model("cnn4", num_classes=10, in_chans=1)
        for variant in VARIANTS:
            model, _ = make_variant(base, variant)
            model.to(device).train()
            order = torch.Generator().manual_seed(seed)
            optimizer = make_optimizer(model, config)
            steps = -(-len(train) // config.batch_size)
            schedule = make_schedule(optimizer, config, config.epochs * steps)
            for _ in range(config.epochs):
                for idx in torch.randperm(len(train), generator=order).to(device).split(config.batch_size):
                    loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
            evaluate(model, train, device=device)  # a study reports train and test accuracy
            evaluate(model, dataset.test, device=device)
            probes = build_probes(list(PROBES))
            captured = capture(model, probed, layers="act", probes=probes, device=device, variant=variant, seed=seed)
            run_probes(captured, probes)


class _SayHow(StudyListener):
    """Prints which path each variant's training took."""

    def training_planned(self, variant: str, seeds: list[int], reason: str | None) -> None:
        print(f"          {variant}: {'fused' if reason is None else 'one run at a time: ' + reason}")

    def fused_steps(self, variant: str, how: str) -> None:
        print(f"          {variant} steps: {how}")


def bnprobe_study(dataset: Dataset, config: TrainConfig, seeds: int, samples: int, device: torch.device,
                  fuse: bool | None, probe_workers: int | None) -> None:
    """The same study through ``run_study``, with its output folder in a temporary directory."""
    study = StudyConfig(model="cnn4", variants=list(VARIANTS), seeds=seeds, samples=samples, probes=list(PROBES),
                        device=str(device), augment=False, fuse=fuse, train=config, probe_workers=probe_workers)
    with tempfile.TemporaryDirectory() as out:
        run_study(study, dataset=dataset, out=out, listener=_SayHow())


def warm_up(device: torch.device) -> None:
    """One training step of cnn4 outside the timings: the device's context and libraries start here."""
    model = create_model("cnn4", num_classes=10, in_chans=1).to(device)
    F.cross_entropy(model(torch.randn(64, 1, 28, 28, device=device)), torch.zeros(64, dtype=torch.long,
                                                                                 device=device)).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, 2,048 samples, 512 probed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fuse", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--probe-workers", default="auto", help="HDBSCAN worker processes: a number or auto")
    args = parser.parse_args()
    seeds, epochs, train, samples = (2, 1, 2048, 512) if args.quick else (4, 10, 60_000, 5000)
    device = resolve_device(args.device)
    dataset = mnist_shaped(train, 1000 if not args.quick else 256)
    config = TrainConfig(epochs=epochs, batch_size=64, precision="fp32")
    fuse = {"auto": None, "on": True, "off": False}[args.fuse]
    workers = None if args.probe_workers == "auto" else int(args.probe_workers)
    print(f"cnn4, {seeds} seeds x {len(VARIANTS)} variants x {epochs} epochs, {train} samples, batch 64, "
          f"probes {','.join(PROBES)} on {samples}, {device}, fuse {args.fuse}, probe workers {args.probe_workers}, "
          f"{torch.get_num_threads()} threads")
    warm_up(device)
    timings = {}
    # bnprobe first: it is the figure the GPU goal is about, so a timeout in the slow plain loop
    # cannot lose it, and whatever warming up is left counts against bnprobe, not for it.
    for name, study in (("bnprobe", lambda: bnprobe_study(dataset, config, seeds, samples, device, fuse, workers)),
                        ("plain", lambda: plain_study(dataset, config, seeds, samples, device))):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        study()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - started
        print(f"{name:>8}: {timings[name]:8.1f} s")
    ratio = timings["plain"] / timings["bnprobe"]
    print(f"   ratio: {ratio:8.2f}x  (plain / bnprobe; above 1: bnprobe is faster)")
    if device.type == "cuda" and not args.quick:
        held = timings["bnprobe"] <= GPU_GOAL_SECONDS and ratio >= GPU_GOAL_RATIO
        goal = f"bnprobe <= {GPU_GOAL_SECONDS:.0f} s and >= {GPU_GOAL_RATIO:.0f}x"
        print(f"GPU goal ({goal}): {'PASS' if held else 'FAIL'}")
    else:
        print(f"no-slowdown goal (ratio >= 1): {'PASS' if ratio >= 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
