"""What the Ray executor costs and buys: one small study run locally, then on a local Ray instance
with 1 worker and with 2.

The study: ``cnn4``, ``bn`` and ``identity`` x ``--seeds`` seeds, 1 epoch, on random data of
MNIST's shape (``bench/study_speed.py``'s), the sparsity probe -- on the CPU one Ray task per run.
Each contender computes on one CPU per run (the local study with one torch thread, each Ray task
with ``--cpus-per-task 1``), so that the comparison is of scheduling, not of threads:

* **local**: ``run_study`` in this process, the runs one after another;
* **ray, 1 worker**: ``ray.init(num_cpus=1)``, the same runs as tasks one after another.  Ray's
  overhead per task is ``(ray - local) / runs``, printed as a fraction of one local run's time
  (goal: at most :data:`OVERHEAD_GOAL` for a 1-epoch cnn4 run).  What is paid once -- ``ray.init``
  and each worker's first task, which imports torch and bnprobe -- is timed apart, in a first study
  of one run per worker (as the local side has its untimed warm-up);
* **ray, 2 workers**: ``ray.init(num_cpus=2)``; the speed-up over 1 worker (ideal: 2).

With ``--device cuda`` on a machine with a GPU it also runs the study's runs as tasks at
``--gpus-per-task 0.25`` (4 on one GPU at once) against ``--gpus-per-task 1`` (one after another),
and prints the speed-up.  The numbers of every contender are checked to be the local study's.

    python bench/scale_out.py                  # 2 seeds (4 runs), 10,000 training images
    python bench/scale_out.py --quick          # 2,000 training images
    python bench/scale_out.py --device cuda    # on a lent GPU: the fractional-GPU comparison too
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch
from study_speed import mnist_shaped

from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig

OVERHEAD_GOAL = 0.05


def _config(seeds: int, device: str, **changes) -> StudyConfig:
    return StudyConfig(**{"model": "cnn4", "dataset": "mnist-shaped", "variants": ("bn", "identity"), "seeds": seeds,
                          "probes": ["sparsity"], "samples": 500, "device": device, "fuse": False,
                          "train": TrainConfig(epochs=1, batch_size=64), **changes})


def _numbers(results) -> list:
    return [(r.variant, r.seed, r.train_accuracy, r.test_accuracy, r.probes) for r in results.runs]


def _timed(config: StudyConfig, dataset, folder: Path, name: str) -> tuple[float, list]:
    started = time.perf_counter()
    results = run_study(config, dataset=dataset, out=folder / name)
    return time.perf_counter() - started, _numbers(results)


def _on_ray(cpus: int, gpus: int, config: StudyConfig, dataset, folder: Path, name: str) -> tuple[float, float, list]:
    """``ray.init`` plus a first study of one run per worker (each worker imports torch and bnprobe
    once: a cost per worker, not per task), then the timed study on the warm workers."""
    started = time.perf_counter()
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run_study(replace(config, variants=("bn",), seeds=cpus), dataset=dataset, out=folder / f"{name}-warm-up")
        start_up = time.perf_counter() - started
        seconds, numbers = _timed(config, dataset, folder, name)
    finally:
        ray.shutdown()
    return start_up, seconds, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="2,000 training images")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the fractional-GPU comparison too")
    args = parser.parse_args()
    train_size = 2_000 if args.quick else args.train_size
    dataset = mnist_shaped(train_size, 1_000)
    runs = 2 * args.seeds
    threads = torch.get_num_threads()
    print(f"cnn4, bn and identity x {args.seeds} seeds = {runs} runs, 1 epoch on {train_size} MNIST-shaped images, "
          "one CPU per run")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.set_num_threads(1)
        try:
            run_study(_config(1, "cpu", variants=("bn",)), dataset=dataset, out=folder / "warm-up")  # imports, shapes
            local, expected = _timed(_config(args.seeds, "cpu"), dataset, folder, "local")
        finally:
            torch.set_num_threads(threads)
        ray_config = _config(args.seeds, "cpu", executor="ray", cpus_per_task=1)
        init1, one, numbers1 = _on_ray(1, 0, ray_config, dataset, folder, "ray-1")
        init2, two, numbers2 = _on_ray(2, 0, ray_config, dataset, folder, "ray-2")
        per_run = local / runs
        overhead = (one - local) / runs
        print(f"local             {local:7.1f} s   ({per_run:.2f} s a run)")
        print(f"ray, 1 worker     {one:7.1f} s   (start-up: ray.init and a first run per worker {init1:.1f} s)")
        print(f"ray, 2 workers    {two:7.1f} s   (start-up {init2:.1f} s)")
        print(f"Ray's overhead per task: {overhead:+.2f} s = {overhead / per_run:+.1%} of one run "
              f"(goal <= {OVERHEAD_GOAL:.0%}: {'met' if overhead / per_run <= OVERHEAD_GOAL else 'NOT met'})")
        print(f"speed-up of 2 workers over 1: {one / two:.2f}x (ideal 2)")
        same = numbers1 == expected and numbers2 == expected
        print(f"numbers on Ray are the local study's: {'yes' if same else 'NO'}")
        if args.device == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit("--device cuda: no GPU here")
            gpu_config = _config(args.seeds, "cuda", executor="ray", cpus_per_task=1)
            _, shared, _ = _on_ray(4, 1, replace(gpu_config, gpus_per_task=0.25), dataset, folder, "gpu-quarter")
            _, whole, _ = _on_ray(4, 1, replace(gpu_config, gpus_per_task=1.0), dataset, folder, "gpu-whole")
            print(f"on one GPU: {runs} runs at --gpus-per-task 0.25 {shared:.1f} s, one after another (1.0) "
                  f"{whole:.1f} s: {whole / shared:.2f}x")


if __name__ == "__main__":
    main()
