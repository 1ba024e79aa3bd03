"""The Ray executor on a local Ray instance (2 CPUs, no dashboard): the same numbers as the local
study, a worker killed mid-training costs nothing, and storage the workers cannot read is refused."""

import os
import signal
import sys
from pathlib import Path

import pytest
import ray
import torch
from torch import nn

import bnprobe
from bnprobe.errors import BnprobeError, MissingExtraError
from bnprobe.models import create_model
from bnprobe.study import StudyConfig, run_study
from bnprobe.study._events import StudyListener
from bnprobe.train import TrainConfig


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's model class, in the workers
    yield
    ray.shutdown()


def _config(**changes) -> StudyConfig:
    return StudyConfig(**{"model": "cnn4", "dataset": "digits", "variants": ("bn", "identity"), "seeds": 2,
                          "probes": ["sparsity", "cka"], "samples": 100, "device": "cpu",
                          "train": TrainConfig(epochs=2), **changes})


def _numbers(results: bnprobe.Results) -> list[tuple]:
    return [(run.variant, run.seed, run.train_accuracy, run.test_accuracy, run.final_loss, run.history, run.probes)
            for run in results.runs]


class _Heard(StudyListener):
    def __init__(self) -> None:
        self.tasks, self.epochs, self.finished = [], [], []

    def task_started(self, variant, seeds, where):
        self.tasks.append((variant, tuple(seeds), where))

    def epoch_done(self, variant, seed, epoch, metrics):
        self.epochs.append((variant, seed, epoch))

    def run_finished(self, run, timings):
        self.finished.append((run.variant, run.seed))


def test_a_study_on_ray_has_the_numbers_and_files_of_the_local_study(tmp_path):
    heard = _Heard()
    on_ray = run_study(_config(executor="ray", cpus_per_task=1), out=tmp_path / "ray", listener=heard)
    torch.set_num_threads(1)  # a task computes on its one CPU; the same threads, the same rounding
    try:
        local = run_study(_config(), out=tmp_path / "local")
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    assert _numbers(on_ray) == _numbers(local)
    assert all(run.probes["cka"] for run in on_ray.runs if run.variant == "identity")  # found their bn run
    assert sorted(heard.finished) == sorted((v, s) for v in ("bn", "identity") for s in (0, 1))
    assert len(heard.tasks) == 4 and all("pid" in where for *_, where in heard.tasks)  # one task a run on CPU
    assert sorted(set(heard.epochs)) == sorted((v, s, e) for v in ("bn", "identity") for s in (0, 1) for e in (1, 2))
    saved = bnprobe.Results.load(tmp_path / "ray")
    assert _numbers(saved) == _numbers(local) and saved.layers == local.layers
    assert saved.config["executor"] == "ray" and saved.config["device"] == "cpu"
    for name in ("results.csv", "plots/sparsity.png", "plots/cka.png", "checkpoints/identity-seed1.pt"):
        assert (tmp_path / "ray" / name).is_file(), name
    assert not (tmp_path / "ray" / "cache").exists()


class _KilledOnce(nn.Module):
    """cnn4, whose worker process kills itself in the middle of its first training's second epoch, once."""

    def __init__(self, marker: str, steps_before_kill: int) -> None:
        super().__init__()
        self.net = create_model("cnn4", num_classes=10, in_chans=1, img_size=8)
        self.marker, self.steps_before_kill, self.steps = marker, steps_before_kill, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
            if self.steps == self.steps_before_kill and not Path(self.marker).exists():
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def test_a_killed_worker_is_retried_from_its_last_epoch_and_the_numbers_do_not_change(tmp_path):
    digits = bnprobe.load_dataset("digits")
    steps_per_epoch = -(-len(digits.train) // TrainConfig().batch_size)
    marker = tmp_path / "killed"
    model = _KilledOnce(str(marker), steps_before_kill=steps_per_epoch + 2)
    heard = _Heard()
    retried = run_study(_config(executor="ray", cpus_per_task=1, max_retries=2), model=model, out=tmp_path / "ray",
                        listener=heard)
    assert marker.is_file()  # a worker did die, after its run's first epoch was saved; its task was retried
    torch.set_num_threads(1)
    try:
        undisturbed = run_study(_config(), model=model, out=tmp_path / "local")  # the marker is there: no kill
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    assert _numbers(retried) == _numbers(undisturbed)


def test_storage_the_workers_cannot_read_is_refused_before_anything_trains(tmp_path, monkeypatch):
    import bnprobe.study._ray as on_ray

    monkeypatch.setattr(on_ray, "reads_token", lambda path, token: False)
    with pytest.raises(BnprobeError, match=r"output folder .* is not on storage the Ray workers on .* can read; put "
                                           "out on a file system every node mounts"):
        run_study(_config(executor="ray"), out=tmp_path / "out")
    assert not (tmp_path / "out" / "checkpoints").exists()
    assert not list((tmp_path / "out").glob(".bnprobe-storage-*"))


def test_the_ray_executor_needs_an_output_folder():
    with pytest.raises(BnprobeError, match="the Ray executor keeps every run's train state in the output folder; "
                                           "give out='DIR'"):
        run_study(_config(executor="ray"))


def test_without_ray_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"the Ray executor needs ray, which is not installed; install it "
                                                r"with: pip install 'bnprobe\[ray\]'"):
        run_study(_config(executor="ray"), out=tmp_path / "out")


class _StopAfterFirstRun(StudyListener):
    def run_finished(self, run, timings):
        raise KeyboardInterrupt  # as Ctrl-C in the driver, once a run is filed


def test_an_interrupted_ray_study_keeps_its_filed_runs_and_resumes(tmp_path):
    from bnprobe.errors import StudyInterrupted

    config = _config(executor="ray", cpus_per_task=1, variants=("bn",), probes=["sparsity"])
    with pytest.raises(StudyInterrupted) as stopped:
        run_study(config, out=tmp_path / "out", listener=_StopAfterFirstRun())
    assert len(stopped.value.finished) == 1
    assert len(bnprobe.Results.load(tmp_path / "out").runs) == 1  # written as it finished
    heard = _Heard()
    resumed = run_study(config, out=tmp_path / "out", resume=True, listener=heard)
    assert [(run.variant, run.seed) for run in resumed.runs] == [("bn", 0), ("bn", 1)]
    kept = stopped.value.finished[0]
    assert [task[:2] for task in heard.tasks] in ([], [("bn", (1 - kept[1],))])  # the filed run is not run again
    assert heard.finished == [kept, ("bn", 1 - kept[1])]


def test_init_runs_on_ray_untrained_and_compared_with_its_bn_run(tmp_path):
    heard = _Heard()
    results = run_study(_config(executor="ray", cpus_per_task=1, variants=("bn", "init"), seeds=1,
                                train=TrainConfig(epochs=1)), out=tmp_path / "ray", listener=heard)
    init = next(run for run in results.runs if run.variant == "init")
    assert init.epochs_run == 0 and init.history == [] and init.probes["cka"]  # found its bn run
    assert ("init", 0, 1) not in heard.epochs and sorted(heard.finished) == [("bn", 0), ("init", 0)]
