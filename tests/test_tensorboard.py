"""A study logged to TensorBoard: the events written are read back and match the study's numbers."""

import sys

import pytest
import torch
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bnprobe.cli import cli
from bnprobe.data import Dataset, Split, register_dataset
from bnprobe.errors import MissingExtraError
from bnprobe.study import StudyConfig, TensorBoardListener, run_study
from bnprobe.train import TrainConfig


@register_dataset("tb-blobs")
def _blobs(data_root=None, image_size=None) -> Dataset:
    g = torch.Generator().manual_seed(2)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("tb-blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def test_every_run_is_a_tensorboard_run_with_its_curve_and_probe_numbers(tmp_path):
    config = StudyConfig(model="cnn4", dataset="tb-blobs", variants=["bn", "identity"], seeds=1, samples=16,
                         probes=["sparsity"], device="cpu", train=TrainConfig(epochs=3, batch_size=32))
    results = run_study(config, listener=TensorBoardListener(tmp_path / "tb"))
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["bn-seed0", "identity-seed0"]
    for run in results.runs:
        events = _events(tmp_path / "tb" / f"{run.variant}-seed0")
        loss = events.Scalars("train/loss")
        assert [e.step for e in loss] == [1, 2, 3]
        assert [e.value for e in loss] == pytest.approx([h["loss"] for h in run.history], rel=1e-6)
        assert events.Scalars("test/accuracy")[-1].value == pytest.approx(run.history[-1]["test_accuracy"], rel=1e-6)
        sparsity = events.Scalars("sparsity/channel_sparsity")
        layers = list(run.probes["sparsity"])
        assert [e.step for e in sparsity] == list(range(len(layers)))
        assert [e.value for e in sparsity] == pytest.approx(
            [run.probes["sparsity"][layer]["channel_sparsity"] for layer in layers], rel=1e-6)
        assert events.Scalars("run/test_accuracy")[0].value == pytest.approx(run.test_accuracy, rel=1e-6)
        assert "layers/text_summary" in events.Tags()["tensors"]  # the layer names, as text


def test_the_command_line_logs_with_log_and_refuses_an_unknown_tracker(tmp_path):
    args = ["run", "cnn4", "--dataset", "tb-blobs", "--variants", "bn,identity", "--epochs", "1", "--samples", "16",
            "--probes", "sparsity", "--batch-size", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--log", f"tensorboard:{tmp_path / 'tb'}"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["bn-seed0", "identity-seed0"]
    bad = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "o2"), "--log", "mlflow:runs"])
    assert bad.exit_code == 2
    assert "--log 'mlflow:runs': give tensorboard:DIR" in bad.output


def test_without_tensorboard_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError, match=r"logging to TensorBoard needs tensorboard.*bnprobe\[tensorboard\]"):
        TensorBoardListener(tmp_path)
