"""Where a study's time goes: set-up and the pre-flight check before the first run, and each run's
training split into steps, per-epoch saves, evaluation and set-up (what bench/study_speed.py prints)."""

import io

import pytest
import torch
from rich.console import Console

from bnprobe.cli._progress import RichListener
from bnprobe.data import Dataset, Split
from bnprobe.study import RunTimings, StudyConfig, StudyListener, run_study
from bnprobe.train import TRAIN_PARTS, TrainConfig, train_model


def _data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


class _Recorder(StudyListener):
    def __init__(self) -> None:
        self.prepared: list[tuple[float, float]] = []
        self.timings: dict[tuple[str, int], RunTimings] = {}

    def study_prepared(self, setup: float, preflight: float) -> None:
        self.prepared.append((setup, preflight))

    def run_finished(self, run, timings: RunTimings) -> None:
        self.timings[(run.variant, run.seed)] = timings


def test_train_model_splits_its_time_into_parts_that_add_up(tmp_path):
    from bnprobe.models import create_model

    data = _data()
    torch.manual_seed(0)
    result = train_model(create_model("cnn4", num_classes=4, in_chans=1), data.train, data.test,
                         config=TrainConfig(epochs=3, batch_size=32), device="cpu", checkpoint=tmp_path / "run.pt")
    assert list(result.timings) == list(TRAIN_PARTS)
    assert all(result.timings[part] > 0 for part in ("steps", "saves", "evaluation"))
    assert sum(result.timings.values()) == pytest.approx(result.seconds)


def test_without_a_checkpoint_no_time_is_spent_saving():
    from bnprobe.models import create_model

    data = _data()
    result = train_model(create_model("cnn4", num_classes=4, in_chans=1), data.train, None,
                         config=TrainConfig(epochs=1, batch_size=32), device="cpu")
    assert result.timings["saves"] == 0.0 and result.timings["steps"] > 0


@pytest.mark.parametrize("fuse", [False, True])
def test_a_study_reports_set_up_pre_flight_and_each_runs_training_parts(tmp_path, fuse):
    recorder = _Recorder()
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=2, samples=16, probes=["sparsity"],
                         device="cpu", probe_workers=0, fuse=fuse, train=TrainConfig(epochs=2, batch_size=32))
    run_study(config, dataset=_data(), out=tmp_path / "out", listener=recorder)
    ((setup, preflight),) = recorder.prepared
    assert setup > 0 and preflight > 0
    assert set(recorder.timings) == {(v, s) for v in ("bn", "identity") for s in (0, 1)}
    for timings in recorder.timings.values():
        assert timings.fused_runs == (2 if fuse else 1)
        assert list(timings.train_parts) == list(TRAIN_PARTS)
        assert sum(timings.train_parts.values()) == pytest.approx(timings.train)
        assert timings.train_parts["saves"] > 0 and timings.train_parts["evaluation"] > 0


def test_verbose_progress_says_where_the_time_went(tmp_path):
    buffer = io.StringIO()
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], samples=16, probes=["sparsity"], device="cpu",
                         probe_workers=0, train=TrainConfig(epochs=1, batch_size=32))
    with RichListener(Console(file=buffer, width=80), verbose=True) as listener:
        run_study(config, dataset=_data(), out=tmp_path / "out", listener=listener)
    text = buffer.getvalue()
    assert "pre-flight check of every variant" in text
    assert text.count("training: steps ") == 2


def test_quiet_progress_keeps_the_split_to_itself(tmp_path):
    buffer = io.StringIO()
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], samples=16, probes=["sparsity"], device="cpu",
                         probe_workers=0, train=TrainConfig(epochs=1, batch_size=32))
    with RichListener(Console(file=buffer, width=80)) as listener:
        run_study(config, dataset=_data(), out=tmp_path / "out", listener=listener)
    assert "pre-flight" not in buffer.getvalue() and "training: steps" not in buffer.getvalue()
