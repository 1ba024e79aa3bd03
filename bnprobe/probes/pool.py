"""Worker processes for the CPU half of split probes, so a study's layers and runs are probed in parallel.

HDBSCAN runs on one core per call and holds the GIL, so threads cannot spread it; a study has many
such calls (layers x runs).  A probe that splits its work (:meth:`bnprobe.probes.base.Probe.prepare`
in the study's process, where the GPU is; :meth:`~bnprobe.probes.base.Probe.conclude` on the CPU)
gets its ``conclude`` calls sent here, and the study goes on capturing and preparing the next layers
and runs -- or training -- while the workers cluster.

Workers are started with ``spawn`` (safe after CUDA and threaded BLAS are initialised in the parent)
when the study starts (:meth:`ProbePool.start`) or at the first :meth:`ProbePool.submit`, each
limited to one thread and with every probe module imported before the first task.  A probe and its
prepared data travel pickled; a probe a worker cannot load (a class defined in a notebook's
``__main__``), that cannot be pickled or whose prepared data holds GPU tensors is concluded in the
study's process instead, with the same numbers.  When a worker dies (out of memory), every task
still queued fails with it: the pool stops taking work, and those tasks -- and the rest -- are
concluded in the study's process.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import io
import multiprocessing
import os
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import torch

from bnprobe.params import check_int
from bnprobe.probes._protocol import Probe

DEFAULT_MAX_PENDING_BYTES = 1 << 30
"""Pickled tasks waiting for workers, at most (1 GiB: PCA projections are ~1 MB a layer, but exact
mode's distance matrices are 200 MB at 5,000 samples)."""
MAX_PENDING_PER_WORKER = 4
MAX_AUTO_WORKERS = 32
"""Each worker holds torch, hdbscan and scikit-learn (a few hundred MB); more rarely pay off."""
MIN_CORES_FOR_AUTO = 4
"""With fewer cores the study's own process, which already uses every core for capture and PCA,
probes inline: workers would compete with it for the same cores and cost seconds to start."""


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(cores: int | None = None) -> int:
    """Workers for ``probe_workers=None``: one per core but one (for the study's process), from 4 cores
    and at most :data:`MAX_AUTO_WORKERS`; else 0."""
    cores = available_cores() if cores is None else cores
    return min(cores - 1, MAX_AUTO_WORKERS) if cores >= MIN_CORES_FOR_AUTO else 0


class Unloadable:
    """What a worker returns when it cannot unpickle a task (the probe's class is not importable there)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _start_worker() -> None:
    """Worker initialiser: one thread per worker (torch and the BLAS behind numpy), and every probe
    module imported now -- while the study trains -- rather than with the first task."""
    import torch
    from threadpoolctl import threadpool_limits

    from bnprobe.probes._registry import list_probes

    torch.set_num_threads(1)
    threadpool_limits(1)
    list_probes()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While workers start, hide where ``__main__`` came from, so that they do not import it.

    ``spawn`` re-imports the parent's main script in every child (as ``__mp_main__``): a user's
    script that calls :func:`bnprobe.run_study` at top level, without an ``if __name__ == "__main__":``
    guard, would run again in each worker.  The workers need nothing from it -- their tasks are
    pickled bnprobe objects -- and a probe class defined there is concluded in the parent anyway.
    """
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _conclude(task: bytes) -> dict[str, float] | Unloadable:
    try:
        probe, prepared = unpack_task(task)
    except Exception as exc:
        return Unloadable(f"{type(exc).__name__}: {exc}")
    return probe.conclude(prepared)


class _HostOnlyPickler(pickle.Pickler):
    """A pickler that refuses tensors on a GPU: unpickling one would start CUDA in the worker."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            raise pickle.PicklingError(f"a tensor on {obj.device} stays in the study's process")
        return NotImplemented


def pack_task(probe: Probe, prepared: Any) -> bytes | None:
    """``(probe, prepared)`` pickled for a worker; None when either cannot be pickled or holds GPU tensors."""
    buffer = io.BytesIO()
    try:
        _HostOnlyPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((probe, prepared))
    except Exception:
        return None
    return buffer.getvalue()


def unpack_task(task: bytes) -> tuple[Probe, Any]:
    """The ``(probe, prepared)`` of :func:`pack_task`, in this process."""
    return pickle.loads(task)  # noqa: S301 - our own bytes


class ProbePool:
    """Worker processes running :meth:`Probe.conclude`; use as a context manager, or :meth:`close`.

    ``workers`` is the number of processes (``None``: :func:`auto_workers`; 0: none, so every probe
    runs in the calling process).  At most ``max_pending_bytes`` of pickled tasks (and four per
    worker) wait for the workers at a time: :meth:`submit` blocks until there is room, so a fast GPU
    cannot pile up every run's prepared data in host memory.
    """

    def __init__(self, workers: int | None = None, *, max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES) -> None:
        self.workers = auto_workers() if workers is None else check_int("probe pool", "workers", workers, minimum=0)
        self.max_pending_bytes = check_int("probe pool", "max_pending_bytes", max_pending_bytes, minimum=1)
        self._executor: futures.ProcessPoolExecutor | None = None
        self._pending: dict[futures.Future, int] = {}
        self.stopped: str | None = None
        """Why the pool stopped taking work (a worker died), or None."""

    @property
    def active(self) -> bool:
        """Whether work is sent to workers: at least one worker, and no worker has died."""
        return self.workers >= 1 and self.stopped is None

    def start(self) -> None:
        """Start the workers now (they import bnprobe, torch and hdbscan: seconds), e.g. before training."""
        if self._executor is None and self.active:
            self._executor = futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                         initializer=_start_worker)
            with _main_module_hidden():
                for _ in range(self.workers):
                    self._executor.submit(int)  # while no worker is idle, each submit starts one more

    def submit(self, task: bytes) -> futures.Future | None:
        """Queue a :func:`pack_task` task on a worker, once there is room; None when the pool takes no work."""
        if not self.active:
            return None
        self.start()
        self._wait_for_room(len(task))
        try:
            future = self._executor.submit(_conclude, task)
        except futures.process.BrokenProcessPool as exc:
            self.stop(f"a probe worker died ({exc})")
            return None
        self._pending[future] = len(task)
        return future

    def _wait_for_room(self, size: int) -> None:
        while True:
            self._pending = {future: n for future, n in self._pending.items() if not future.done()}
            full = sum(self._pending.values()) + size > self.max_pending_bytes or \
                len(self._pending) >= MAX_PENDING_PER_WORKER * self.workers
            if not self._pending or not full:
                return
            futures.wait(list(self._pending), return_when=futures.FIRST_COMPLETED)

    def stop(self, reason: str) -> None:
        """Send no more work to the workers (after one died)."""
        self.stopped = reason

    def close(self) -> None:
        """Stop the workers once their queued work is done."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ProbePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
