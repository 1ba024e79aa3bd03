"""Checkpoints, resuming after an interruption, and probing a finished study again."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bnprobe.cli import cli
from bnprobe.data import Augment, Dataset, Split, register_dataset
from bnprobe.errors import BnprobeError
from bnprobe.study import StudyConfig, StudyListener, run_study
from bnprobe.train import TrainConfig, checkpoint_path, load_train_state, train_model


@register_dataset("tiny-blobs")
def _tiny_blobs(data_root=None, image_size=None) -> Dataset:
    """96 grey 8x8 images in 4 classes: 64 to train, 32 to test."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("tiny-blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4, augment=Augment(pad=1, flip=True))


STUDY = ["cnn4", "--dataset", "tiny-blobs", "--variants", "bn,identity", "--epochs", "3", "--samples", "16",
         "--probes", "sparsity", "--batch-size", "32", "--device", "cpu", "--quiet"]


class _Stop(Exception):
    pass


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(32, 4))


def _stop_after(stop_epoch):
    def on_epoch(epoch, _metrics):
        if epoch == stop_epoch:
            raise _Stop

    return on_epoch


@pytest.mark.parametrize("config", [
    TrainConfig(epochs=4, batch_size=16, optimizer="sgd", lr=0.05, schedule="onecycle", label_smoothing=0.1),
    TrainConfig(epochs=4, batch_size=16, optimizer="adamw", lr=1e-2, schedule="cosine", agc=0.05),
], ids=["sgd-onecycle", "adamw-cosine-agc"])
def test_resumed_run_is_bit_identical(tmp_path, config):
    data = _tiny_blobs()
    augment = Augment(pad=1, flip=True)
    whole = _model()
    expected = train_model(whole, data.train, data.test, config=config, device="cpu", seed=5, augment=augment,
                           checkpoint=tmp_path / "whole.pt")
    path = tmp_path / "cut.pt"
    with pytest.raises(_Stop):
        train_model(_model(), data.train, data.test, config=config, device="cpu", seed=5, augment=augment,
                    checkpoint=path, on_epoch=_stop_after(2))
    assert load_train_state(path)["epoch"] == 2  # written before the callback ran
    resumed_model = _model()
    resumed = train_model(resumed_model, data.train, data.test, config=config, device="cpu", seed=5, augment=augment,
                          checkpoint=path, resume=True)
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.history == expected.history and resumed.test_accuracy == expected.test_accuracy
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_resume_with_another_config_names_the_field(tmp_path):
    data = _tiny_blobs()
    path = tmp_path / "run.pt"
    train_model(_model(), data.train, config=TrainConfig(epochs=1, batch_size=32), device="cpu", checkpoint=path)
    with pytest.raises(BnprobeError, match=r"another config \(batch_size is 32 there and 16 now\)"):
        train_model(_model(), data.train, config=TrainConfig(epochs=1, batch_size=16), device="cpu", checkpoint=path,
                    resume=True)


def _run(*args):
    return CliRunner().invoke(cli, list(args))


class _Interrupt(StudyListener):
    def epoch_done(self, variant, seed, epoch, metrics):
        if (variant, epoch) == ("identity", 2):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "study"
    result = _run("run", *STUDY, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_interrupted_study_resumes_to_the_same_numbers(finished, tmp_path):
    out = tmp_path / "study"
    config = StudyConfig(model="cnn4", dataset="tiny-blobs", variants=["bn", "identity"], samples=16,
                         probes=["sparsity"], device="cpu", train=TrainConfig(epochs=3, batch_size=32))
    with pytest.raises(KeyboardInterrupt):
        run_study(config, out=out, listener=_Interrupt())
    saved = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in saved["runs"]] == ["bn"]  # bn finished, identity stopped after epoch 2
    assert load_train_state(checkpoint_path(out, "identity", 0))["epoch"] == 2
    report = _run("report", str(out), "--no-plots")
    assert report.exit_code == 0, report.output
    assert ("incomplete study: 1 of 2 runs missing (identity seed 0); run it again with --resume to complete "
            "them") in " ".join(report.output.split())

    result = _run("run", *STUDY, "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "incomplete study" not in _run("report", str(out), "--no-plots").output
    resumed, whole = (json.loads((d / "results.json").read_text()) for d in (out, finished))
    assert resumed["runs"] == whole["runs"] and resumed["layers"] == whole["layers"]
    for variant in ("bn", "identity"):
        a, b = (load_train_state(checkpoint_path(d, variant, 0)) for d in (out, finished))
        assert a["epoch"] == 3 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_resume_needs_the_same_config(finished):
    result = _run("run", *STUDY, "--out", str(finished), "--resume", "--lr", "0.01")
    assert result.exit_code == 2
    assert "its config differs (train.lr is 0.001 there and 0.01 now)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_resuming_a_finished_study_trains_nothing(finished, monkeypatch):
    import bnprobe.study._run as study

    before = json.loads((finished / "results.json").read_text())
    monkeypatch.setattr(study, "train_model", lambda *a, **k: pytest.fail("a finished run was trained again"))
    result = _run("run", *STUDY, "--out", str(finished), "--resume")
    assert result.exit_code == 0, result.output
    assert json.loads((finished / "results.json").read_text()) == before


def test_probe_a_finished_study_again(finished, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    before = json.loads((out / "results.json").read_text())
    result = _run("probe", str(out), "--probes", "binary_patterns,sparsity", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    after = json.loads((out / "results.json").read_text())
    assert after["config"]["probes"] == ["sparsity", "binary_patterns"]
    for old, new in zip(before["runs"], after["runs"], strict=True):
        assert set(new["probes"]) == {"sparsity", "binary_patterns"}
        assert new["probes"]["sparsity"] == old["probes"]["sparsity"]  # same weights, same samples, same numbers
        assert {k: v for k, v in new.items() if k != "probes"} == {k: v for k, v in old.items() if k != "probes"}
    assert set(after["runs"][0]["probes"]["binary_patterns"]) == set(after["layers"])
    # The CSV and plots hold the same numbers as results.json, the new probe's included.
    assert any(row.split(",")[2] == "binary_patterns" for row in (out / "results.csv").read_text().splitlines())
    assert (out / "plots" / "binary_patterns.png").is_file()


def test_a_diverged_run_is_recorded_and_the_study_goes_on(tmp_path):
    out = tmp_path / "study"
    args = [a if a != "bn,identity" else "identity,bn" for a in STUDY]
    result = _run("run", *args, "--out", str(out), "--optimizer", "sgd", "--lr", "0.01,identity=1e12",
                  "--weight-decay", "0")
    assert result.exit_code == 0, result.output
    identity, bn = json.loads((out / "results.json").read_text())["runs"]
    assert identity["diverged_at_epoch"] == 1 and identity["epochs_run"] == 1 and identity["probes"] == {}
    assert identity["final_loss"] is None
    assert bn["diverged_at_epoch"] is None and bn["epochs_run"] == 3 and "sparsity" in bn["probes"]
    report = _run("report", str(out))
    assert "diverged in 1/1" in report.output
    again = _run("probe", str(out), "--probes", "sparsity", "--device", "cpu", "--quiet")
    assert again.exit_code == 0, again.output  # the diverged run is skipped, not an error


def test_probe_with_one_unreadable_checkpoint_changes_nothing(finished, tmp_path):
    """Every checkpoint is read before results.json is touched: a bad one late in the study must not
    leave the earlier runs probed and the later ones not."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    (out / "checkpoints" / "identity-seed0.pt").write_bytes(b"not a checkpoint")
    files = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = _run("probe", str(out), "--probes", "binary_patterns", "--device", "cpu", "--quiet")
    assert result.exit_code == 2 and "identity-seed0.pt" in result.output, result.output
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == files
