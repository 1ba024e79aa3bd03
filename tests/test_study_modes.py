"""The three study modes -- scratch, fine-tune, probe-only -- chosen by flag, checked, and reported."""

import json

import pytest
import timm
import torch
from click.testing import CliRunner

from bnprobe import StudyConfig, run_study
from bnprobe.cli import cli
from bnprobe.errors import BnprobeError
from bnprobe.study import load_run

TINY = ["--dataset", "tiny-study", "--samples", "16", "--batch-size", "32", "--device", "cpu", "--probes", "sparsity"]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """timm's tiny ``test_resnet`` as published: 1000 classes, 3 channels."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pt"
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), path)
    return path


def _run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def test_probe_only_evaluates_the_variants_of_pretrained_weights_as_they_are(tmp_path, weights_file):
    out = tmp_path / "out"
    result = _run("test_resnet", "--pretrained", weights_file, "--probe-only", "--variants", "bn,fold,identity",
                  "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "probe only, no training: the variants of the pretrained weights in" in " ".join(result.output.split())
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["mode"] == "probe-only"
    runs = {run["variant"]: run for run in data["runs"]}
    assert all(run["epochs_run"] == 0 and run["history"] == [] and run["final_loss"] is None for run in runs.values())
    # folding BatchNorm into the convolutions computes what eval-mode BatchNorm does
    assert runs["fold"]["test_accuracy"] == pytest.approx(runs["bn"]["test_accuracy"])
    assert runs["fold"]["test_loss"] == pytest.approx(runs["bn"]["test_loss"], rel=1e-4)
    published = torch.load(weights_file)
    loaded = load_run(out, "bn", 0).state_dict()
    assert torch.equal(loaded["layer2.0.conv2.weight"], published["layer2.0.conv2.weight"])


def test_fine_tune_trains_variants_made_from_the_pretrained_weights(tmp_path, weights_file):
    out = tmp_path / "out"
    result = _run("test_resnet", "--pretrained", weights_file, "--variants", "bn,identity", "--epochs", "1",
                  "--json", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "fine-tune"
    data = json.loads((out / "results.json").read_text())
    assert [run["epochs_run"] for run in data["runs"]] == [1, 1]
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert "fine-tuned: every variant is made from the pretrained weights in" in " ".join(report.output.split())


def test_scratch_is_the_default_and_says_so(tmp_path):
    result = _run("cnn4", "--variants", "bn,identity", "--epochs", "1", "--out", tmp_path / "out", *TINY)
    assert result.exit_code == 0, result.output
    assert ("from scratch: each seed's variants start from one fresh initialisation and train 1 epoch"
            in " ".join(result.output.split()))


@pytest.mark.parametrize(("args", "message"), [
    (["--scratch", "--pretrained", "W"], "mode scratch trains from a fresh initialisation, but pretrained is given"),
    (["--fine-tune"], "mode fine-tune trains from starting weights, but none are given"),
    (["--probe-only", "--pretrained", "W", "--seeds", "2"], "every seed probes the same pretrained"),
    (["--pretrained", "W", "--init-weights", "W"], "both pretrained and init_weights give starting weights"),
])
def test_modes_that_cannot_hold_fail_in_one_line(tmp_path, weights_file, args, message):
    args = [str(weights_file) if a == "W" else a for a in args]
    result = _run("test_resnet", *args, "--out", tmp_path / "out", *TINY)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_a_study_file_sets_the_mode_by_name(tmp_path, weights_file):
    study = tmp_path / "study.toml"
    study.write_text(f'model = "test_resnet"\nmode = "probe-only"\npretrained = "{weights_file}"\n'
                     'variants = "bn,fold"\n')
    result = _run("--config", study, "--out", tmp_path / "out", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["mode"] == "probe-only"


def test_a_given_module_keeps_its_weights_unless_trained_from_scratch(tiny_split):
    from bnprobe import Dataset, create_model

    data = Dataset("tiny", tiny_split, tiny_split, 4)
    torch.manual_seed(3)
    module = create_model("cnn4", num_classes=4, in_chans=1, width=4, img_size=8)
    config = dict(model="mine", variants=["bn"], samples=8, probes=["sparsity"], device="cpu",
                  train={"epochs": 1, "batch_size": 40})
    kept = run_study(StudyConfig(**config, mode="probe-only"), model=module, dataset=data)
    again = run_study(StudyConfig(**config, mode="probe-only"), model=module, dataset=data)
    fresh = run_study(StudyConfig(**config), model=module, dataset=data)
    assert kept.runs[0].test_loss == again.runs[0].test_loss
    assert kept.runs[0].test_loss != fresh.runs[0].test_loss  # scratch re-initialised the copy
    assert kept.runs[0].epochs_run == 0 and fresh.runs[0].epochs_run == 1


def test_a_study_saved_before_modes_resumes_as_it_ran(tmp_path):
    out = tmp_path / "out"
    config = StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn", "identity"], samples=16,
                         probes=["sparsity"], device="cpu", train={"epochs": 1, "batch_size": 32})
    run_study(config, out=out)
    data = json.loads((out / "results.json").read_text())
    for added in ("mode", "pretrained", "weights"):
        del data["config"][added]
    data["runs"] = data["runs"][:1]
    (out / "results.json").write_text(json.dumps(data))
    results = run_study(config, out=out, resume=True)
    assert [run.variant for run in results.runs] == ["bn", "identity"]
    with pytest.raises(BnprobeError, match="its config differs"):
        weights = str(out / "checkpoints" / "bn-seed0.pt")
        run_study(StudyConfig(**{**config.to_dict(), "mode": None, "init_weights": weights}), out=out, resume=True)
