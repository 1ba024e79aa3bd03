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
``__main__``) or that cannot be pickled is concluded in the study's process instead, with the same
numbers.  A worker that dies (out of memory) fails the probes it held; the pool then stops, and the
rest run in the study's process.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import pickle
import sys
from collections.abc import Iterator
from typing import Any

from bnprobe.params import check_int
from bnprobe.probes.base import Probe

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
    """Workers for ``probe_workers=None``: one per core but one (for the study's process), from 4 cores; else 0."""
    cores = available_cores() if cores is None else cores
    return cores - 1 if cores >= MIN_CORES_FOR_AUTO else 0


class Unloadable:
    """What a worker returns when it cannot unpickle a task (the probe's class is not importable there)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _start_worker() -> None:
    """Worker initialiser: one thread per worker (torch and the BLAS behind numpy), and every probe
    module imported now -- while the study trains -- rather than with the first task."""
    import torch
    from threadpoolctl import threadpool_limits

    from bnprobe.probes.base import list_probes

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
        probe, prepared = pickle.loads(task)  # noqa: S301 - our own bytes, from the parent process
    except Exception as exc:
        return Unloadable(f"{type(exc).__name__}: {exc}")
    return probe.conclude(prepared)


class ProbePool:
    """Worker processes running :meth:`Probe.conclude`; use as a context manager, or :meth:`close`.

    ``workers`` is the number of processes (``None``: :func:`auto_workers`; 0: none, so every probe
    runs in the calling process).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = auto_workers() if workers is None else check_int("probe pool", "workers", workers, minimum=0)
        self._executor: futures.ProcessPoolExecutor | None = None
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

    def submit(self, probe: Probe, prepared: Any) -> futures.Future | None:
        """Queue ``probe.conclude(prepared)`` on a worker; None when it must run in this process instead."""
        if not self.active:
            return None
        try:
            task = pickle.dumps((probe, prepared), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return None
        self.start()
        try:
            return self._executor.submit(_conclude, task)
        except futures.process.BrokenProcessPool as exc:
            self.stop(f"a probe worker died ({exc})")
            return None

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
