"""``bnprobe probe MODEL --weights``: variants trained elsewhere, probed and reported as a study."""

import json

import pytest
import torch
from click.testing import CliRunner

from bnprobe import make_variant
from bnprobe.cli import cli
from bnprobe.data import load_dataset
from bnprobe.models import create_model
from bnprobe.train import evaluate

DATA = ["--dataset", "tiny-study", "--samples", "16", "--device", "cpu", "--probes", "sparsity"]


def _trained_elsewhere(folder, variant, seed):
    """A ``variant`` of cnn4 for tiny-study with weights of its own (as another script would save them)."""
    torch.manual_seed(100 + seed)
    model, _ = make_variant(create_model("cnn4", num_classes=4, in_chans=1, img_size=8), variant)
    path = folder / f"{variant}-{seed}.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _probe(*args):
    return CliRunner().invoke(cli, ["probe", *map(str, args)])


def test_weights_trained_elsewhere_are_reported_as_a_study(tmp_path):
    made = {(v, s): _trained_elsewhere(tmp_path, v, s) for v in ("bn", "identity") for s in (0, 1)}
    spec = ",".join(f"{v}@{s}={path}" for (v, s), (_, path) in made.items())
    out = tmp_path / "out"
    result = _probe("cnn4", "--weights", spec, "--out", out, *DATA)
    assert result.exit_code == 0, result.output
    assert "probe only, no training: each run's weights were trained elsewhere" in " ".join(result.output.split())
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["mode"] == "probe-only" and data["config"]["variants"] == ["bn", "identity"]
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [("bn", 0), ("identity", 0), ("bn", 1), ("identity", 1)]
    test = load_dataset("tiny-study").test
    for run in data["runs"]:
        model = made[(run["variant"], run["seed"])][0]
        assert run["test_accuracy"] == pytest.approx(evaluate(model, test, device="cpu")[1])
        assert run["epochs_run"] == 0 and set(run["probes"]["sparsity"]) == set(data["layers"])
    assert (out / "results.csv").is_file() and (out / "plots").is_dir()


def test_a_file_that_does_not_fit_its_variant_names_the_first_mismatching_key(tmp_path):
    _, bn = _trained_elsewhere(tmp_path, "bn", 0)
    result = _probe("cnn4", "--weights", f"bn={bn},identity={bn}", "--out", tmp_path / "out", *DATA)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert f"checkpoint {bn} does not fit PlainCNN: the checkpoint has key features.1.weight" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("bn=A,identity=A,bn@1=A", "no weights for identity seed 1; give identity@1=FILE"),
    ("bn=A,identity@x=A", "weights key 'identity@x': write VARIANT or VARIANT@SEED"),
    ("bn=A,identity", "weights: cannot read 'identity'; write VARIANT=FILE"),
    ("bn=A,bn@0=A", "weights for bn@0 are given twice"),
])
def test_weights_that_do_not_make_a_study_fail_in_one_line(tmp_path, spec, message):
    _, path = _trained_elsewhere(tmp_path, "bn", 0)
    result = _probe("cnn4", "--weights", spec.replace("A", str(path)), "--out", tmp_path / "out", *DATA)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert message in result.output


def test_study_options_without_weights_are_refused(tmp_path):
    result = _probe(tmp_path, "--dataset", "tiny-study", "--probes", "sparsity")
    assert result.exit_code == 2 and "--dataset sets up a study of weights trained elsewhere" in result.output
    result = _probe(tmp_path)
    assert result.exit_code == 2 and "no probes given" in result.output
