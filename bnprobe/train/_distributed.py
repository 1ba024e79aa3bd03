"""Training past one GPU: ``torchrun --nproc-per-node N bnprobe run ...``.

torchrun starts N copies of the command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their
environment.  A study then joins the process group (:func:`process_group`: NCCL on CUDA, gloo on the
CPU), each process uses GPU ``LOCAL_RANK``, and :func:`bnprobe.train.train_model` wraps the model in
``DistributedDataParallel`` and trains each process on its shard of the device-resident data.  Only
rank 0 evaluates into results, probes, and writes ``results.json`` and the checkpoints; the other
ranks wait for it at the start of the next run.  Probing can take a while, hence the long
:data:`TIMEOUT` on collectives.

Nothing here is needed in a single process: :func:`current_world` then answers rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT = timedelta(hours=4)
"""How long a process waits in a collective (e.g. for rank 0 to finish probing a run)."""


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes results, checkpoints and probes (rank 0)."""
        return self.rank == 0


def current_world() -> World:
    """The initialised process group's rank and size, or rank 0 of 1 when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_world() -> World:
    """The rank and size torchrun gave this process in its environment (rank 0 of 1 without torchrun)."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means this process's GPU, ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join torchrun's process group for the duration of the block (no-op in a single process).

    A group that is already initialised (by the caller) is used as it is and left open.
    """
    if launched_world().size <= 1 or dist.is_initialized():
        yield current_world()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (rank 0's weights broadcast to all).

    ``sync_bn`` turns BatchNorm layers, timm's norm-act ones included, into synchronised ones, so
    batch statistics are computed over the global batch rather than each process's share.
    """
    if sync_bn:
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_gather(obj: Any) -> list[Any]:
    """``obj`` from every process, by rank (``[obj]`` in a single process)."""
    world = current_world()
    if world.size == 1:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP broadcasts buffers at the start of each forward, so after the last step each process holds
    the statistics of its own last batch; this makes them agree again.
    """
    if current_world().size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
