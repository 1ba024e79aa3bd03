"""Parallel probing: split probes' CPU halves on worker processes give the numbers of the study's process."""

import os
from typing import ClassVar

import numpy as np
import pytest
import torch

from bnprobe.capture import capture
from bnprobe.models import create_model
from bnprobe.probes import build_probes
from bnprobe.probes.base import Probe
from bnprobe.probes.pool import ProbePool, auto_workers, pack_task
from bnprobe.probes.runner import ProbeFailureWarning, probe_context, run_probes, start_probes
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig


class WhereProbe(Probe):
    """Reports the process its ``conclude`` ran in, and fails on a layer named in ``fail_on``."""

    name = "where"
    needs: ClassVar = "vectors"

    def __init__(self, fail_on: str = "") -> None:
        super().__init__()
        self.fail_on = fail_on

    def prepare(self, layer, context):
        return layer.name, float(layer.vectors().mean())

    def conclude(self, prepared):
        name, mean = prepared
        if name == self.fail_on:
            raise ValueError(f"refusing {name}")
        return {"pid": float(os.getpid()), "mean": mean}


class DiesInWorkersProbe(WhereProbe):
    """Kills any process but the one that built it when concluding: a worker dying (out of memory, say)."""

    name = "dies"

    def __init__(self) -> None:
        super().__init__()
        self.parent = os.getpid()

    def conclude(self, prepared):
        if os.getpid() != self.parent:
            os._exit(1)
        return super().conclude(prepared)


class ReturnsNoNumbersProbe(WhereProbe):
    name = "no_numbers"

    def conclude(self, prepared):
        return {"mean": "not a number"}


@pytest.fixture(scope="module")
def pool():
    with ProbePool(2) as workers:
        yield workers


@pytest.fixture(scope="module")
def captured():
    torch.manual_seed(0)
    model = create_model("cnn4", num_classes=4, in_chans=1, width=8)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 4
    x = torch.randn(4, 1, 28, 28, generator=g)[y] * 2 + torch.randn(120, 1, 28, 28, generator=g)
    probes = build_probes("sparsity,hdbscan(min_cluster_size=5),binary_patterns")
    return capture(model, (x, y), probes=probes), probes


def test_workers_give_the_numbers_of_the_study_process(pool, captured):
    result, probes = captured
    alone = run_probes(result, probes)
    parallel = run_probes(result, probes, pool=pool)
    assert parallel.values == alone.values
    assert not parallel.failures
    assert list(parallel.values["hdbscan(min_cluster_size=5)"]) == result.names


def test_split_probes_conclude_in_workers_and_failures_stay_isolated(pool, captured):
    result, _ = captured
    probe = WhereProbe(fail_on=result.names[1])
    outcome = start_probes(result, [probe], pool=pool, on_failure="record").result()
    per_layer = outcome.values[probe.key]
    assert os.getpid() not in {numbers["pid"] for numbers in per_layer.values()} and per_layer  # concluded elsewhere
    refused = result.names[1]
    assert [(f.layer, f.error) for f in outcome.failures] == [(refused, f"ValueError: refusing {refused}")]
    assert per_layer[result.names[0]]["mean"] == pytest.approx(float(result.layers[0].vectors().mean()))


def test_a_probe_the_workers_cannot_import_concludes_here(pool, captured):
    result, _ = captured
    local = type("NotebookProbe", (WhereProbe,), {"__module__": "__main__"})  # as if defined in a notebook
    local.name = "notebook"
    outcome = run_probes(result, [local()], pool=pool)
    assert {numbers["pid"] for numbers in outcome.values["notebook"].values()} == {float(os.getpid())}
    assert not outcome.failures


class KeepsDeviceTensorsProbe(WhereProbe):
    """Prepares a tensor that is not on the CPU (``meta`` stands in for a GPU here)."""

    name = "device_tensor"

    def prepare(self, layer, context):
        return layer.name, float(layer.vectors().mean()), torch.empty(3, device="meta")

    def conclude(self, prepared):
        return super().conclude(prepared[:2])


def test_prepared_gpu_tensors_are_concluded_here_not_sent_to_workers(pool, captured):
    result, _ = captured
    assert pack_task(WhereProbe(), ("layer", torch.ones(2))) is not None
    assert pack_task(WhereProbe(), {"nested": [torch.empty(2, device="meta")]}) is None
    outcome = run_probes(result, [KeepsDeviceTensorsProbe()], pool=pool)
    assert {numbers["pid"] for numbers in outcome.values["device_tensor"].values()} == {float(os.getpid())}
    assert not outcome.failures


def test_auto_workers_leave_small_machines_to_the_study_process():
    assert auto_workers(2) == 0
    assert auto_workers(4) == 3
    assert auto_workers(16) == 15
    assert not ProbePool(0).active


def test_a_study_probed_in_parallel_files_the_same_numbers(tmp_path, tiny_split):
    from bnprobe.data import Dataset

    dataset = Dataset("tiny", tiny_split, tiny_split, int(tiny_split.y.max()) + 1)
    values = []
    for workers in (0, 2):
        config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=2, samples=64,
                             probes=["sparsity", "hdbscan(min_cluster_size=5)"], device="cpu", probe_workers=workers,
                             train=TrainConfig(epochs=1, batch_size=32))
        results = run_study(config, dataset=dataset, out=tmp_path / f"w{workers}")
        values.append([(run.variant, run.seed, run.probes) for run in results.runs])
        assert [(run.variant, run.seed) for run in results.runs] == [("bn", 0), ("identity", 0), ("bn", 1),
                                                                      ("identity", 1)]
    assert values[0] == values[1]
    assert np.isfinite(values[1][0][2]["hdbscan(min_cluster_size=5)"][results.layers[0]]["noise_fraction"])


def test_workers_do_not_rerun_an_unguarded_script(tmp_path):
    """A user's script that starts a pool at top level, with no ``__main__`` guard, runs once."""
    import subprocess
    import sys

    marks = tmp_path / "marks.txt"
    script = tmp_path / "study.py"
    script.write_text(
        "import os\n"
        f"open({str(marks)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "from bnprobe.probes._clustering import HdbscanProbe, Reduced\n"
        "from bnprobe.probes.pool import ProbePool, pack_task\n"
        "import numpy as np\n"
        "points = np.repeat(np.eye(3, 5) * 10, 20, axis=0) + np.random.default_rng(0).normal(0, .3, (60, 5))\n"
        "labels = np.repeat([0, 1, 2], 20)\n"
        "with ProbePool(2) as pool:\n"
        "    task = pool.submit(pack_task(HdbscanProbe(), (Reduced(points, np.ones(60, bool), 5, 1.0), labels)))\n"
        "    print(task.result()['n_clusters'])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3.0"]
    assert len(marks.read_text().split()) == 1  # the workers did not run the script's top level


def test_probes_returning_no_numbers_fail_alone(pool, captured):
    result, _ = captured
    for workers in (pool, None):
        with pytest.warns(ProbeFailureWarning, match=f"{len(result.names)} probe measurements failed: no_numbers on "):
            outcome = run_probes(result, [ReturnsNoNumbersProbe(), WhereProbe()], pool=workers, strict=False)
        assert [f.layer for f in outcome.failures] == result.names
        assert all(f.error.startswith("ValueError: could not convert string to float") for f in outcome.failures)
        assert list(outcome.values["where"]) == result.names


def test_when_a_worker_dies_its_queued_work_is_concluded_here(captured):
    result, _ = captured
    with ProbePool(1) as dying:
        outcome = run_probes(result, [DiesInWorkersProbe()], pool=dying)
        assert dying.stopped is not None and not dying.active
    assert not outcome.failures
    assert {numbers["pid"] for numbers in outcome.values["dies"].values()} == {float(os.getpid())}


def test_submit_waits_for_room_in_the_queue():
    from bnprobe.probes._clustering import HdbscanProbe, Reduced
    from bnprobe.probes.pool import pack_task

    points = np.repeat(np.eye(3, 5) * 10, 20, axis=0) + np.random.default_rng(0).normal(0, 0.3, (60, 5))
    task = pack_task(HdbscanProbe(), (Reduced(points, np.ones(60, bool), 5, 1.0), np.repeat([0, 1, 2], 20)))
    with ProbePool(1, max_pending_bytes=len(task)) as small:
        first = small.submit(task)
        second = small.submit(task)  # no room for two: waits for the first
        assert first.done()
        assert second.result()["n_clusters"] == 3


def test_hdbscan_falls_back_to_the_cpu_when_the_device_runs_out_of_memory(captured):
    from bnprobe.probes._clustering import HdbscanProbe

    result, _ = captured
    layer, context = result.layers[-1], probe_context(result)
    expected = HdbscanProbe(min_cluster_size=5).measure(layer, context)

    def out_of_memory(device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    crowded = type(layer)(**{**vars(layer), "load_tensor": out_of_memory})
    assert HdbscanProbe(min_cluster_size=5).measure(crowded, context) == expected
