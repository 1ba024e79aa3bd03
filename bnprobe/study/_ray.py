"""The Ray executor: a study's runs as Ray tasks, on one node's GPUs or a whole cluster.

A task is the unit the local study already has: one variant's pending seeds (fused, on CUDA) or one
run.  Each task trains, captures and probes its runs in a worker, exactly as the local loop does
(:func:`bnprobe.study._run.train_one`, :func:`~bnprobe.study._run.probe_trained`), and returns their
:class:`RunResult`; the driver files each as it arrives (``results.json`` rewritten atomically), so an
interrupted study continues with ``resume``.  What makes that work:

* **Storage.**  Every task writes its per-epoch train state to ``OUT/checkpoints``, so ``OUT`` must be
  storage every node mounts at the same path; :func:`check_storage` has a task on every node read a
  file the driver wrote there, and refuses the study before anything trains if one cannot.
* **Retries.**  A task whose worker dies is retried by Ray (``max_retries``); the retry resumes each
  run from its last finished epoch, which gives the numbers of an undisturbed run.
* **The ``bn`` reference.**  When a probe compares with ``bn`` (cka), a variant's task waits for the
  tasks of ``bn`` of its seeds and captures ``bn``'s trained weights itself, on the same samples.
* **Progress.**  Tasks send the listener's events to a small actor the driver drains while it waits
  (training steps at most every :data:`EVENT_INTERVAL` seconds a run), so a Ray study shows
  its progress as a local one does, with :meth:`StudyListener.task_started` saying where each task runs.

Ray is the optional extra ``bnprobe[ray]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bnprobe._common import REFERENCE_VARIANT, optional_import, write_atomic
from bnprobe._hints import option, setting
from bnprobe.errors import BnprobeError, StudyInterrupted
from bnprobe.probes import build_probes
from bnprobe.probes.pool import ProbePool
from bnprobe.report._results import Results, RunResult
from bnprobe.study._events import HOOKS, RunTimings, StudyListener
from bnprobe.study._executor import parse_executor
from bnprobe.study._ray_helpers import EventBox, reads_token
from bnprobe.train._distributed import World
from bnprobe.train._loop import resolve_device
from bnprobe.train._state import load_train_state

EVENT_INTERVAL = 0.25
"""Least seconds between two forwarded training steps of one run; the last of an epoch always goes."""
WAIT_SECONDS = 0.2
"""How long the driver waits for a task before it delivers the events that came in meanwhile."""
STORAGE_TIMEOUT = 120.0
"""Seconds the storage check waits for a task on every node."""
THROTTLED = ("training_step",)
"""The events sent at most every :data:`EVENT_INTERVAL`: each says where a run is, so a skipped one loses
nothing (capture batches and probe steps are increments, and each is sent)."""
TASK_CACHE = "task-{}"
"""A task's folder under ``OUT/cache`` (a hex id: a name the output folder's rules know as the study's)."""


def ray_module(name: str = "ray") -> Any:
    """``ray`` (or one of its modules), or the one-line error naming the extra that installs it."""
    return optional_import(name, extra="ray", needed_by="the Ray executor")


def connect(executor: str) -> tuple[Any, bool]:
    """Ray, connected as ``executor`` says; and whether this call started it (and so shuts it down)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray, False
    _, address = parse_executor(executor)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise BnprobeError(f"cannot connect to {where}: {str(exc).strip().splitlines()[0]}; start it with "
                           f"`ray start --head`, or use {option('executor', 'ray')} for a local instance") from None
    return ray, True


def check_storage(ray: Any, out_dir: Path, reader: Any = None) -> None:
    """Refuse ``out_dir`` unless a task on every alive node reads the file the driver writes there."""
    strategies = ray_module("ray.util.scheduling_strategies")
    token = uuid.uuid4().hex
    path = out_dir / f".bnprobe-storage-{token}"
    write_atomic(path, token.encode())
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        read = ray.remote(num_cpus=0)(reader or reads_token)
        refs = [read.options(scheduling_strategy=strategies.NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(str(path), token) for node in nodes]
        try:
            seen = ray.get(refs, timeout=STORAGE_TIMEOUT)
        except ray.exceptions.RayError as exc:
            raise BnprobeError(f"the check that every Ray node reads {setting('out')} {out_dir} did not finish "
                               f"({type(exc).__name__}); check the cluster with `ray status`") from None
        blind = [node.get("NodeManagerAddress", node["NodeID"]) for node, ok in zip(nodes, seen, strict=True) if not ok]
    finally:
        path.unlink(missing_ok=True)
    if blind:
        raise BnprobeError(f"the output folder {out_dir} is not on storage the Ray workers on {', '.join(blind)} "
                           f"can read; put {setting('out')} on a file system every node mounts at the same path "
                           "(docs/scaling.md)")


class Forwarder(StudyListener):
    """A task's listener: sends every hook to the driver's :class:`EventBox`, step events throttled."""

    def __init__(self, box: Any) -> None:
        self.box, self.sent = box, {}

    def _send(self, name: str, *args: Any) -> None:
        # Not waited for: a task blocked in ray.get lends its CPUs to the next task, which then runs beside it.
        self.box.put.remote((name, args))


def _forward(name: str):
    def hook(self: Forwarder, *args: Any) -> None:
        if name in THROTTLED:
            now, key = time.monotonic(), (name, *args[:2])
            last_of_epoch = name == "training_step" and args[2] == args[3]
            if now - self.sent.get(key, 0.0) < EVENT_INTERVAL and not last_of_epoch:
                return
            self.sent[key] = now
        self._send(name, *args)
    hook.__name__ = name
    return hook


for _hook in [name for name in HOOKS if name not in ("run_finished", "run_done", "study_prepared", "study_started")]:
    setattr(Forwarder, _hook, _forward(_hook))  # the driver says those itself


def run_unit(config: Any, source: Any, dataset: Any, out_dir: str, variant: str, seeds: list[int], box: Any,
             *after: Any) -> list[tuple[RunResult, RunTimings, list[str], str]]:
    """One task: train, capture and probe ``variant``'s ``seeds`` in this worker, as the local loop does.

    ``after`` are the results of the ``bn`` tasks this one waits for (only their being done matters).
    Returns, per run, what the driver files: the run, its timings, its captured layers and the device.
    """
    from bnprobe.study._run import Study, probe_trained, train_fused_groups, train_one

    torch.set_num_threads(max(1, int(config.cpus_per_task)))
    listener = Forwarder(box)
    listener.task_started(variant, seeds, f"{socket.gethostname()} (pid {os.getpid()})")
    device = resolve_device(config.device)
    study = Study(config, source, dataset.to(device), build_probes(config.probes), device, Path(out_dir), listener,
                  ProbePool(0))
    study.cache_root = Path(out_dir) / "cache" / TASK_CACHE.format(uuid.uuid4().hex)
    fused = train_fused_groups(study, {variant: seeds}, resume=True)
    finished = []
    for seed in seeds:
        model, report, trained = fused.pop((variant, seed), None) or train_one(study, variant, seed, resume=True)
        reference = _reference(study, variant, seed)
        outcome, captured, finish, timings = probe_trained(study, variant, seed, model, report, trained, reference)
        finished.append((finish(outcome.result()), timings, captured.names if captured is not None else [],
                         str(device)))
        del captured, reference
        study.clear_cache()
    return finished


def _reference(study: Any, variant: str, seed: int) -> Any:
    """The capture of ``bn`` seed ``seed`` for a probe that compares with it; None when none asks, for
    ``bn`` itself, and when that run diverged (as in the local loop)."""
    if variant == REFERENCE_VARIANT or not any(probe.compares_with_reference for probe in study.probes):
        return None
    path = study.checkpoint(REFERENCE_VARIANT, seed)
    if REFERENCE_VARIANT not in study.config.variants or load_train_state(path)["diverged_at_epoch"] is not None:
        return None
    listener, study.listener = study.listener, StudyListener()  # bn's own run was filed: no progress for it
    try:
        return study.capture(study.trained(REFERENCE_VARIANT, seed), REFERENCE_VARIANT, seed)
    finally:
        study.listener = listener


def task_units(config: Any, pending: dict[str, list[int]], fuse: bool) -> list[tuple[str, list[int]]]:
    """The tasks: ``bn``'s first, one per variant's pending seeds when they ``fuse``, else one per run."""
    units = []
    for variant in sorted(pending, key=lambda v: v != REFERENCE_VARIANT):
        seeds = pending[variant]
        if seeds:
            units += [(variant, seeds)] if fuse and len(seeds) > 1 else [(variant, [seed]) for seed in seeds]
    return units


def run_on_ray(study: Any, results: Results, runs: dict[tuple[str, int], RunResult], world: World) -> None:
    """Run every pending run of ``study`` as Ray tasks, filing each in ``results`` as it finishes."""
    from bnprobe.study._run import Ledger, pending_runs, study_order

    config, listener = study.config, study.listener
    if study.out_dir is None:
        raise BnprobeError("the Ray executor keeps every run's train state in the output folder; give "
                           f"{option('out', 'DIR')} (storage every node mounts)")
    ray, started = connect(config.executor)
    try:
        out_dir = study.out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        check_storage(ray, out_dir)
        ledger = Ledger(results, runs, study_order(config), out_dir, world, listener, keep=study.keep_checkpoint)
        ledger.save()
        listener.study_started(len(ledger.order))
        for key in ledger.order:
            if key in runs:
                listener.run_finished(runs[key], RunTimings(kept=True))
        _run_tasks(ray, study, ledger, out_dir, pending_runs(config, runs))
        study.drop_checkpoints()
        for folder in (out_dir / "cache").glob(TASK_CACHE.format("*")):  # a dead worker's task left its own
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out_dir / "cache").rmdir()
    finally:
        if started:
            ray.shutdown()


def _run_tasks(ray: Any, study: Any, ledger: Any, out_dir: Path, pending: dict[str, list[int]]) -> None:
    config, listener = study.config, study.listener
    gpus = config.gpus_per_task
    if gpus is None:
        gpus = 1.0 if config.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    fuse = config.fuse if config.fuse is not None else gpus > 0
    comparing = any(probe.compares_with_reference for probe in study.probes)
    box = ray.remote(num_cpus=0)(EventBox).remote()
    shared = [ray.put(absolute_paths(config)), ray.put(study.source), ray.put(study.dataset.to("cpu"))]
    task = ray.remote(run_unit).options(num_cpus=config.cpus_per_task, num_gpus=gpus,
                                        max_retries=config.max_retries, retry_exceptions=False)
    units: dict[Any, tuple[str, list[int]]] = {}
    for variant, seeds in task_units(config, pending, fuse):
        after = [ref for ref, (v, s) in units.items() if comparing and v == REFERENCE_VARIANT and set(s) & set(seeds)]
        units[task.remote(*shared, str(out_dir), variant, seeds, box, *after)] = (variant, seeds)
    waiting = list(units)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=WAIT_SECONDS)
            _deliver(ray.get(box.drain.remote()), listener)
            for ref in done:
                finished = _result(ray, ref, *units[ref], config.max_retries)
                _deliver(ray.get(box.drain.remote()), listener)
                for run, timings, layers, device in finished:
                    ledger.results.layers = ledger.results.layers or layers
                    ledger.results.config["device"] = device
                    ledger.file((run.variant, run.seed), run, timings)
    except KeyboardInterrupt as exc:
        for ref in waiting:
            ray.cancel(ref, force=True)
        raise StudyInterrupted(ledger.finished) from exc
    finally:
        ray.kill(box)


def absolute_paths(config: Any) -> Any:
    """``config`` with the files it reads (starting weights) as absolute paths, as workers on other nodes
    must find them: on the shared storage, like ``--out``."""
    def absolute(path: Any) -> Any:
        return str(Path(path).resolve()) if isinstance(path, str) and path else path

    return replace(config, init_weights=absolute(config.init_weights),
                   pretrained=absolute(config.pretrained) if isinstance(config.pretrained, str) else config.pretrained,
                   weights={key: absolute(path) for key, path in config.weights.items()})


def _result(ray: Any, ref: Any, variant: str, seeds: list[int], retries: int) -> list:
    """A task's runs, or its failure in one line (a bnprobe error as it was raised in the worker)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, BnprobeError):  # bad input found in the worker: the same one-line error
            raise exc.cause from None
        raise BnprobeError(f"the Ray task of {variant} seeds {', '.join(map(str, seeds))} failed: "
                           f"{str(exc).strip().splitlines()[-1]}; {option('resume')} continues the study") from None
    except ray.exceptions.RayError as exc:
        raise BnprobeError(f"the Ray task of {variant} seeds {', '.join(map(str, seeds))} was lost after "
                           f"{retries} retries ({type(exc).__name__}); {option('resume')} continues the "
                           "study") from None


def _deliver(events: list[tuple[str, tuple]], listener: StudyListener) -> None:
    for name, args in events:
        getattr(listener, name)(*args)
