"""Bad input: one line, exit code 2, no traceback -- and nothing already written is lost."""

import json

import pytest
import torch
from _cli import assert_one_line_error, finished_study, run_cli

from bnprobe.data import Split
from bnprobe.errors import BnprobeError
from bnprobe.models import create_model
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig, train_model

TINY = ["--epochs", "1", "--samples", "60", "--batch-size", "64", "--device", "cpu", "--probes", "sparsity",
        "--quiet"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_study(tmp_path_factory, TINY)


@pytest.mark.parametrize(("args", "message"), [
    (["--layers", "attn"], "no module matches layers='attn'"),
    (["--variants", "bn,groupnorm:7"], "groupnorm:7 needs a channel count divisible by 7"),
], ids=["layers-select-nothing", "groups-do-not-divide"])
def test_a_bad_variant_or_layer_fails_before_anything_is_trained_or_replaced(finished, args, message):
    files = {path: path.read_bytes() for path in finished.rglob("*") if path.is_file()}
    options = [a for a in TINY if a not in ("--probes", "sparsity")]
    assert_one_line_error(run_cli("run", "cnn4", "--out", finished, "--overwrite", *options, *args), message)
    assert {path: path.read_bytes() for path in finished.rglob("*") if path.is_file()} == files


def test_a_cache_folder_the_user_keeps_in_out_keeps_its_files(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mine.txt").write_text("keep")
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], samples=40, probes=["sparsity", "hdbscan"],
                         device="cpu", max_memory=0, train=TrainConfig(epochs=1))  # max_memory 0: vectors on disk
    results = run_study(config, out=tmp_path)
    assert all("hdbscan" in run.probes for run in results.runs)  # read from the on-disk cache
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["mine.txt"]  # its own run folders are gone


@pytest.mark.parametrize(("content", "message"), [
    (b"[]", "holds a JSON list, not a study's results"),
    (b"\xff\xfe", "is not a text file"),
    (json.dumps({"schema_version": 1, "model": "cnn4", "dataset": "digits",
                 "runs": [{"variant": "bn", "seed": 0, "train_accuracy": "high", "test_accuracy": None,
                           "final_loss": None}]}).encode(), "run/model/train_accuracy is 'high', not a number"),
], ids=["list", "binary", "non-numeric"])
def test_report_refuses_files_that_are_not_results(tmp_path, content, message):
    (tmp_path / "results.json").write_bytes(content)
    assert_one_line_error(run_cli("report", tmp_path / "results.json"), message)


def test_a_path_the_file_system_refuses_is_bad_input(tmp_path):
    (tmp_path / "afile").write_text("")
    assert_one_line_error(run_cli("run", "cnn4", "--out", tmp_path / "afile" / "sub", *TINY), "Not a directory")


def test_a_truncated_weights_file_is_bad_input(finished, tmp_path):
    (tmp_path / "cut.pt").write_bytes((finished / "checkpoints" / "bn-seed0.pt").read_bytes()[:5000])
    assert_one_line_error(run_cli("run", "cnn4", "--checkpoint", tmp_path / "cut.pt", "--out", tmp_path / "o", *TINY),
                    "cannot read checkpoint")


@pytest.mark.parametrize(("option", "message"), [
    (["--grad-clip", "0"], "grad_clip must be > 0"),
    (["--lr", "0"], "lr must be > 0"),
])
def test_values_that_would_train_nothing_are_refused(tmp_path, option, message):
    assert_one_line_error(run_cli("run", "cnn4", "--out", tmp_path / "o", *TINY, *option), message)
    assert not (tmp_path / "o").exists()


def test_a_model_without_channels_is_refused():
    with pytest.raises(BnprobeError, match="cnn4: width must be >= 1, got 0"):
        create_model("cnn4", num_classes=10, width=0)


def test_resuming_from_another_models_checkpoint_says_so(tmp_path):
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    config = TrainConfig(epochs=1, batch_size=16)
    train_model(create_model("cnn4", num_classes=4, in_chans=1, width=8), Split(x, y), config=config, device="cpu",
                checkpoint=tmp_path / "run.pt")
    with pytest.raises(BnprobeError, match="holds another model's weights .*; delete it"):
        train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config, device="cpu",
                    checkpoint=tmp_path / "run.pt", resume=True)


def test_a_study_config_takes_comma_lists_and_a_dict_of_training_settings():
    config = StudyConfig(model="cnn4", variants="bn, identity", probes="sparsity,hdbscan(dims=30,min_cluster_size=5)",
                         train={"epochs": 2, "lr": 0.01})
    assert config.variants == ["bn", "identity"]
    assert config.probes == ["sparsity", "hdbscan(dims=30,min_cluster_size=5)"]
    assert config.train == TrainConfig(epochs=2, lr=0.01)
    with pytest.raises(BnprobeError, match="train: unknown setting 'epoch'; settings: epochs, batch_size"):
        StudyConfig(model="cnn4", train={"epoch": 2})
    with pytest.raises(BnprobeError, match="train must be a TrainConfig or a dict of its settings, got int"):
        StudyConfig(model="cnn4", train=5)


def test_a_file_system_error_about_no_given_path_is_a_bug_and_shown_in_full(monkeypatch, finished):
    from bnprobe.report import Results

    def fail(_path):
        raise FileNotFoundError("an internal file went missing")

    monkeypatch.setattr(Results, "load", fail)
    result = run_cli("report", finished)
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)


def test_a_results_file_of_another_schema_says_so_once(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 2, "model": "cnn4", "dataset": "digits"}))
    result = run_cli("report", tmp_path)
    assert_one_line_error(result, "results schema version 2 is not 1; re-run the study with this bnprobe version")
    assert "not a bnprobe results file" not in result.output


@pytest.mark.parametrize("setting", ["momentum", "weight_decay", "label_smoothing", "lr"])
def test_training_settings_must_be_finite(setting):
    with pytest.raises(BnprobeError, match=f"train: {setting} must be a finite number, got nan"):
        TrainConfig(**{setting: float("nan")})


@pytest.mark.parametrize(("content", "reason"), [(b"garbage\n", "not a torch.save file of tensors"),
                                                 (b"", "the file is empty or cut short")], ids=["text", "empty"])
def test_a_weights_file_that_is_not_one_says_why_without_torchs_advice(tmp_path, content, reason):
    (tmp_path / "w.pt").write_bytes(content)
    result = run_cli("surgery", "cnn4", "--to", "fold", "--checkpoint", tmp_path / "w.pt")
    assert_one_line_error(result, f"({reason}); give a file saved with torch.save")
    assert "weights_only" not in result.output


def test_a_batch_size_that_leaves_one_sample_for_bn_is_one_line_before_anything_is_written(tmp_path):
    """9 training images in batches of 4 leave 1 for the last step (as batch 4 does on digits' 1,437),
    and BatchNorm1d cannot train on one; the study says so before it writes a file."""
    from bnprobe.data import Dataset

    g = torch.Generator().manual_seed(0)
    data = Dataset("odd", Split(torch.randn(9, 1, 8, 8, generator=g), torch.arange(9) % 2),
                   Split(torch.randn(4, 1, 8, 8, generator=g), torch.arange(4) % 2), 2)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2))
    config = StudyConfig(model="mlp", variants=["bn", "identity"], samples=4, probes=["sparsity"], device="cpu",
                         train=TrainConfig(epochs=1, batch_size=4))
    with pytest.raises(BnprobeError, match="batch size 4 leaves the last batch of each epoch with 1 of the 9 "
                                           "training samples.*e.g. 3"):
        run_study(config, model=net, dataset=data, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(BnprobeError, match="batch size 4 leaves"):
        train_model(net, data.train, config=TrainConfig(epochs=1, batch_size=4), device="cpu")
    train_model(net, data.train, config=TrainConfig(epochs=1, batch_size=3), device="cpu")  # 3 batches of 3


@pytest.mark.parametrize("overrides", [{"epochs": 1}, [("identity", {"lr": 0.1})]])
def test_overrides_that_are_not_per_variant_settings_are_one_line(overrides):
    with pytest.raises(BnprobeError, match="overrides must map a variant to its own settings"):
        StudyConfig(model="cnn4", overrides=overrides)
