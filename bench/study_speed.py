"""A whole study's wall time: a plain sequential loop against ``bnprobe.run_study``.

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

After an untimed warm-up (one training step, and the probes' libraries imported: both contenders
need them), the two take turns for ``--rounds`` rounds (default 3), bnprobe first in odd rounds and
the plain loop first in even ones, so that whatever a process pays the first time it meets a shape
(oneDNN primitives, allocator pools) is not charged to one side only.  Prints every round, the
median of each contender and plain / bnprobe of the medians (above 1: bnprobe is faster), then
where the time went, as medians over the rounds:

* bnprobe: set-up, the pre-flight check (every variant made and captured on one sample), and summed
  over runs the training steps, per-epoch saves, evaluation (per-epoch test accuracy and the final
  train/test passes), the rest of training's set-up, capture, and probes -- from
  :meth:`bnprobe.study.StudyListener.study_prepared` and :class:`bnprobe.study.RunTimings`;
* plain: its training steps, evaluation, capture and probes.

``--quick`` shrinks the study so it runs in a minute or two on a CPU:

    python bench/study_speed.py --quick --device cpu
    python bench/study_speed.py --device cuda --rounds 1   # 4 seeds x 10 epochs, 60,000 samples
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter

import torch
import torch.nn.functional as F

from bnprobe.capture import capture
from bnprobe.data import Dataset, Split
from bnprobe.models import create_model
from bnprobe.probes.base import build_probes
from bnprobe.probes.runner import run_probes
from bnprobe.study import RunTimings, StudyConfig, StudyListener, run_study
from bnprobe.study._run import probe_subset
from bnprobe.surgery import make_variant
from bnprobe.train._loop import TrainConfig, evaluate, make_optimizer, make_schedule, resolve_device

VARIANTS = ("bn", "identity")
GPU_GOAL_SECONDS = 30.0
GPU_GOAL_RATIO = 5.0
PROBES = ("sparsity", "hdbscan")
QUICK_GOAL_RATIO = 1.10
"""``--quick`` on the CPU: the study at least 10 % faster than the plain loop."""
BNPROBE_PARTS = ("set-up", "pre-flight", "steps", "saves", "evaluation", "train set-up", "capture", "probes")
PLAIN_PARTS = ("steps", "evaluation", "capture", "probes")


def mnist_shaped(train: int, test: int) -> Dataset:
    """Random images of MNIST's shape with labels that a CNN can partly learn (a class-dependent mean)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (train + test,), generator=g)
    images = torch.randn(10, 1, 28, 28, generator=g)[labels] + torch.randn(train + test, 1, 28, 28, generator=g)
    return Dataset("mnist-shaped", Split(images[:train], labels[:train]), Split(images[train:], labels[train:]), 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class _Clock:
    """Adds the wall time of named parts (``with clock("steps"): ...``) into a Counter."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.parts = device, Counter()

    def __call__(self, part: str) -> _Clock:
        self._part = part
        return self

    def __enter__(self) -> None:
        _sync(self.device)
        self._started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.parts[self._part] += time.perf_counter() - self._started


def plain_study(dataset: Dataset, config: TrainConfig, seeds: int, samples: int, device: torch.device) -> Counter:
    """Every run one after another, trained by a hand-written loop, then captured and probed; the
    seconds of its parts."""
    clock = _Clock(device)
    train = dataset.train.to(device)
    probed = probe_subset(train, samples)
    for seed in range(seeds):
        torch.manual_seed(seed)
        base = create_model("cnn4", num_classes=10, in_chans=1)
        for variant in VARIANTS:
            model, _ = make_variant(base, variant)
            with clock("steps"):
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
            with clock("evaluation"):
                evaluate(model, train, device=device)  # a study reports train and test accuracy
                evaluate(model, dataset.test, device=device)
            probes = build_probes(list(PROBES))
            with clock("capture"):
                captured = capture(model, probed, layers="act", probes=probes, device=device, variant=variant,
                                   seed=seed)
            with clock("probes"):
                run_probes(captured, probes)
    return clock.parts


class _Recorder(StudyListener):
    """Collects where bnprobe's time went; says once which path each variant's training took."""

    def __init__(self, say: bool) -> None:
        self.say, self.parts = say, Counter()

    def training_planned(self, variant: str, seeds: list[int], reason: str | None) -> None:
        if self.say:
            print(f"          {variant}: {'fused' if reason is None else 'one run at a time: ' + reason}")

    def fused_steps(self, variant: str, how: str) -> None:
        if self.say:
            print(f"          {variant} steps: {how}")

    def study_prepared(self, setup: float, preflight: float) -> None:
        self.parts["set-up"] += setup
        self.parts["pre-flight"] += preflight

    def run_finished(self, run, timings: RunTimings) -> None:
        share = 1 / timings.fused_runs  # a fused group's training time is counted once over its runs
        names = {"setup": "train set-up"}
        for part, seconds in timings.train_parts.items():
            self.parts[names.get(part, part)] += seconds * share
        self.parts["capture"] += timings.capture
        self.parts["probes"] += timings.probe


def bnprobe_study(dataset: Dataset, config: TrainConfig, seeds: int, samples: int, device: torch.device,
                  fuse: bool | None, probe_workers: int | None, say: bool) -> Counter:
    """The same study through ``run_study``, with its output folder in a temporary directory; the
    seconds of its parts."""
    study = StudyConfig(model="cnn4", variants=list(VARIANTS), seeds=seeds, samples=samples, probes=list(PROBES),
                        device=str(device), augment=False, fuse=fuse, train=config, probe_workers=probe_workers)
    recorder = _Recorder(say)
    with tempfile.TemporaryDirectory() as out:
        run_study(study, dataset=dataset, out=out, listener=recorder)
    return recorder.parts


def warm_up(device: torch.device) -> None:
    """Outside the timings: one training step of cnn4 (the device's context and libraries start here)
    and the probes built (their modules -- HDBSCAN, scikit-learn -- imported), which both sides need."""
    build_probes(list(PROBES))
    model = create_model("cnn4", num_classes=10, in_chans=1).to(device)
    F.cross_entropy(model(torch.randn(64, 1, 28, 28, device=device)), torch.zeros(64, dtype=torch.long,
                                                                                 device=device)).backward()
    _sync(device)


def _split(parts: list[Counter], names: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {statistics.median(p[name] for p in parts):.2f}" for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, 2,048 samples, 512 probed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fuse", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--probe-workers", default="auto", help="HDBSCAN worker processes: a number or auto")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both contenders (the medians are compared)")
    args = parser.parse_args()
    seeds, epochs, train, samples = (2, 1, 2048, 512) if args.quick else (4, 10, 60_000, 5000)
    device = resolve_device(args.device)
    dataset = mnist_shaped(train, 1000 if not args.quick else 256)
    config = TrainConfig(epochs=epochs, batch_size=64, precision="fp32")
    fuse = {"auto": None, "on": True, "off": False}[args.fuse]
    workers = None if args.probe_workers == "auto" else int(args.probe_workers)
    print(f"cnn4, {seeds} seeds x {len(VARIANTS)} variants x {epochs} epochs, {train} samples, batch 64, "
          f"probes {','.join(PROBES)} on {samples}, {device}, fuse {args.fuse}, probe workers {args.probe_workers}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    warm_up(device)
    contenders = {"bnprobe": lambda say: bnprobe_study(dataset, config, seeds, samples, device, fuse, workers, say),
                  "plain": lambda _say: plain_study(dataset, config, seeds, samples, device)}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    parts: dict[str, list[Counter]] = {name: [] for name in contenders}
    for index in range(args.rounds):
        # bnprobe first in the first round: on the GPU it is the figure the goal is about, so a timeout
        # in the slow plain loop cannot lose it
        order = ("bnprobe", "plain") if index % 2 == 0 else ("plain", "bnprobe")
        for name in order:
            _sync(device)
            started = time.perf_counter()
            parts[name].append(contenders[name](index == 0))
            _sync(device)
            walls[name].append(time.perf_counter() - started)
            print(f"round {index + 1} {name:>8}: {walls[name][-1]:8.1f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    print(f" bnprobe: {medians['bnprobe']:8.1f} s  (median; {_split(parts['bnprobe'], BNPROBE_PARTS)})")
    print(f"   plain: {medians['plain']:8.1f} s  (median; {_split(parts['plain'], PLAIN_PARTS)})")
    ratio = medians["plain"] / medians["bnprobe"]
    print(f"   ratio: {ratio:8.2f}x  (plain / bnprobe of the medians; above 1: bnprobe is faster); "
          f"load average {os.getloadavg()[0]:.2f}")
    if device.type == "cuda" and not args.quick:
        held = medians["bnprobe"] <= GPU_GOAL_SECONDS and ratio >= GPU_GOAL_RATIO
        goal = f"bnprobe <= {GPU_GOAL_SECONDS:.0f} s and >= {GPU_GOAL_RATIO:.0f}x"
        print(f"GPU goal ({goal}): {'PASS' if held else 'FAIL'}")
    else:
        print(f"CPU goal (ratio >= {QUICK_GOAL_RATIO:.2f}): {'PASS' if ratio >= QUICK_GOAL_RATIO else 'FAIL'}")


if __name__ == "__main__":
    main()
