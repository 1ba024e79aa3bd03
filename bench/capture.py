"""Peak memory and wall time of bnprobe's capture against a naive hook, on a CIFAR-shaped VGG-16.

bnprobe's ``vgg16_cifar`` (13 conv-BN-ReLU layers, random weights, eval mode), all 13 post-ReLU
outputs flattened (276,480 values per sample), ``--samples`` random 32x32 inputs.  Three contenders,
each in a fresh interpreter so that its peak resident memory (``ru_maxrss``) is its own:

* ``plain``   -- one forward pass over the samples, no hooks: the time baseline;
* ``naive``   -- forward hooks that keep a float32 CPU copy of every output in a Python list;
* ``bnprobe`` -- ``bnprobe.capture(..., spatial="flatten", dtype=--dtype)`` with the default 2 GiB
  ``max_memory`` and ``max_device_memory="auto"``: at 5,000 samples the vectors (5.5 GB as float32,
  2.8 GB as float16) stay on the GPU when there is one and they fit half its free memory, and
  otherwise go to the on-disk cache, the layers one ``.npy`` file each (``--max-device-memory 0``
  forces the host path on a GPU).

Each contender first runs one untimed batch (allocator, oneDNN/cuDNN kernel choice). With ``--repeat
N`` the three run N times in turn and each keeps its fastest time and highest peak, which steadies
the ratios on a busy machine. On a GPU each contender also reports its peak device memory
(``torch.cuda.max_memory_allocated`` over the timed section), and bnprobe where its vectors went
(device / memory / disk) and when its first batch came back (what set-up costs). Goals: peak RSS of
bnprobe at most a third of the naive hook's; wall time at most 1.5x the plain forward pass. Prints
both ratios and PASS/FAIL, and what each contender holds above the plain pass (the interpreter,
torch and the model weigh the same in all three); exits 1 when a goal fails.

    python bench/capture.py                            # 5,000 samples, GPU when there is one
    python bench/capture.py --samples 2000 --device cpu
    python bench/capture.py --dtype float32 --batch-size 128
    python bench/capture.py --max-device-memory 0      # on a GPU: vectors to host memory / disk
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from bnprobe.capture import DEFAULT_MAX_DEVICE_MEMORY, DEFAULT_MAX_MEMORY, capture
from bnprobe.models import create_model

RSS_GOAL = 1 / 3
TIME_GOAL = 1.5
CONTENDERS = ("plain", "naive", "bnprobe")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _device_budget(text: str) -> int | None | str:
    """``--max-device-memory``: ``auto``, ``none`` (no limit) or bytes (0: never on the device)."""
    if text.lower() == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a byte count, got {text!r}") from None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_contender(mode: str, args: argparse.Namespace) -> dict:
    """Time one contender in this process; return its seconds, peak RSS and notes."""
    device = _device(args.device)
    torch.manual_seed(0)
    model = create_model("vgg16_cifar", num_classes=10, in_chans=3).eval().to(device)
    x = torch.randn(args.samples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(args.samples) % 10
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 13
    batches = [x[i:i + args.batch_size] for i in range(0, args.samples, args.batch_size)]
    with torch.no_grad():
        model(batches[0].to(device))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    kept: list[torch.Tensor] = []
    if mode == "naive":
        for m in relus:
            m.register_forward_hook(lambda _m, _i, out: kept.append(out.detach().to("cpu", copy=True)))
    batch_done: list[float] = []
    start = time.perf_counter()
    if mode == "bnprobe":
        result = capture(model, (x, y), spatial="flatten", dtype=args.dtype, max_memory=args.max_memory,
                         max_device_memory=args.max_device_memory, batch_size=args.batch_size, device=device,
                         on_batch=lambda _n: batch_done.append(time.perf_counter()))
    else:
        with torch.no_grad():
            for batch in batches:
                model(batch.to(device))
    _sync(device)  # device-resident capture queues its copies without waiting for them
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if mode == "bnprobe":
        # from the shapes: loading device-resident vectors would copy them to the host
        stored = len(result.labels) * sum(int(np.prod(layer.shape)) for layer in result.layers) * \
            np.dtype(args.dtype).itemsize
        where = {"device": f"on {device}", "memory": "in host memory",
                 "disk": f"on disk in {result.cache_dir}"}[result.placement]
        # Where the time goes: layer discovery and store set-up come before the first batch returns
        # (on a GPU its kernels may still run then), the batches after.
        notes = (f"{len(result)} layers, {stored / 1e9:.2f} GB of {args.dtype} {where}; "
                 f"first batch back after {batch_done[0] - start:.3f} s")
        placement = result.placement
    else:
        notes = f"{len(kept)} tensors, {sum(t.nbytes for t in kept) / 1e9:.2f} GB of float32 in a list" if kept else ""
        placement = None
    return {"mode": mode, "seconds": seconds, "peak_rss_mb": peak_mb, "peak_gpu_mb": peak_gpu_mb,
            "placement": placement, "notes": notes}


def _spawn(mode: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--mode", mode],
                          stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="bnprobe's storage dtype")
    parser.add_argument("--max-memory", type=int, default=DEFAULT_MAX_MEMORY,
                        help="bnprobe's in-memory budget in bytes (default 2 GiB)")
    parser.add_argument("--max-device-memory", type=_device_budget, default=DEFAULT_MAX_DEVICE_MEMORY,
                        help="bnprobe's GPU budget for the vectors: auto (half the free memory, the default), "
                             "none (no limit) or bytes; 0 keeps them off the GPU")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest time counts")
    parser.add_argument("--mode", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(run_contender(args.mode, args)))
        return 0

    device = _device(args.device)
    print(f"vgg16_cifar, 13 ReLU layers flattened, {args.samples} samples of 3x32x32, batch {args.batch_size}, "
          f"device {device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    rows: dict[str, dict] = {}
    for _ in range(args.repeat):
        for mode in CONTENDERS:
            row = _spawn(mode, argv)
            gpu = f"   peak GPU {row['peak_gpu_mb']:8.0f} MB" if row["peak_gpu_mb"] is not None else ""
            print(f"  {mode:8s} {row['seconds']:8.2f} s   peak RSS {row['peak_rss_mb']:8.0f} MB{gpu}   {row['notes']}",
                  flush=True)
            best = rows.setdefault(mode, row)
            best["seconds"] = min(best["seconds"], row["seconds"])
            best["peak_rss_mb"] = max(best["peak_rss_mb"], row["peak_rss_mb"])
            if row["peak_gpu_mb"] is not None:
                best["peak_gpu_mb"] = max(best["peak_gpu_mb"], row["peak_gpu_mb"])
    base = rows["plain"]["peak_rss_mb"]
    print(f"above the plain pass: naive {rows['naive']['peak_rss_mb'] - base:+.0f} MB, "
          f"bnprobe {rows['bnprobe']['peak_rss_mb'] - base:+.0f} MB")
    if rows["plain"]["peak_gpu_mb"] is not None:
        gpu = ", ".join(f"{mode} {rows[mode]['peak_gpu_mb']:.0f} MB" for mode in CONTENDERS)
        print(f"peak GPU memory: {gpu} (bnprobe's vectors: {rows['bnprobe']['placement']})")
    else:
        print(f"bnprobe's vectors: {rows['bnprobe']['placement']}")
    rss_ratio = rows["bnprobe"]["peak_rss_mb"] / rows["naive"]["peak_rss_mb"]
    time_ratio = rows["bnprobe"]["seconds"] / rows["plain"]["seconds"]
    rss_ok, time_ok = rss_ratio <= RSS_GOAL, time_ratio <= TIME_GOAL
    print(f"peak RSS bnprobe / naive   = {rss_ratio:.2f} (goal <= {RSS_GOAL:.2f}): {'PASS' if rss_ok else 'FAIL'}")
    print(f"wall time bnprobe / plain  = {time_ratio:.2f} (goal <= {TIME_GOAL:.2f}): {'PASS' if time_ok else 'FAIL'}")
    return 0 if rss_ok and time_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
