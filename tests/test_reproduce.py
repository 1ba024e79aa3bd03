"""``bnprobe reproduce``: the potgieter2025 preset's values, the user's changes, and a whole tiny run."""

import json

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console
from test_datasets import _mnist_arrays, _write_idx

from bnprobe.cli import cli
from bnprobe.cli.reproduce import per_variant_changes, render_reproduction
from bnprobe.data import Dataset, Split
from bnprobe.errors import BnprobeError
from bnprobe.report import Results, RunResult
from bnprobe.reproduce._presets import Changes, assess, build_study, model_factory, subset


def _run(*args):
    return CliRunner().invoke(cli, list(args))


def _changes(variants, **options):
    """The Changes that ``--variants`` and the per-variant options (``lr="0.05"``) make on the command line."""
    shared, own = per_variant_changes(variants, options)
    return Changes(study={"variants": variants}, train=shared, per_variant=own)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_mnist_recipe_has_what_the_paper_states(dataset):
    study = build_study("potgieter2025", dataset)
    config = study.config
    assert (config.model, config.dataset) == ("cnn4", dataset)  # fashion-mnist borrows the mnist recipe
    assert (config.train.optimizer, config.train.lr) == ("sgd", 0.01)
    assert config.variants == ["bn", "identity+bias", "init"] and config.overrides == {}
    assert study.compared_variant == "identity+bias"  # init is the untrained reference, never the compared one
    assert (config.seeds, config.samples, config.layers) == (4, 5000, "act")  # post-ReLU, 5,000 training samples
    assert config.probes == ["sparsity", "hdbscan"]
    assert study.train_subset is None and study.test_subset is None


def test_cifar10_recipe_gives_the_no_bn_model_its_own_adam_learning_rate():
    config = build_study("potgieter2025", "cifar10").config
    assert (config.model, config.train.optimizer) == ("vgg16_cifar", "adam")
    assert config.train_for("identity+bias").lr != config.train_for("bn").lr
    assert (config.seeds, config.samples, config.variants) == (4, 5000, ["bn", "identity+bias", "init"])
    assert "init" not in config.overrides  # the no-BN learning rate is for a trained variant


def test_quick_shrinks_the_study_and_the_users_changes_win():
    study = build_study("potgieter2025", "fashion-mnist", quick=True)
    assert (study.config.seeds, study.config.samples, study.config.train.epochs) == (2, 1000, 5)
    assert (study.train_subset, study.test_subset) == (10_000, None)
    assert study.config.train.lr == 0.01  # quick changes size, not the recipe
    changed = build_study("potgieter2025", "mnist", quick=True,
                          changes=Changes(study={"seeds": 3, "device": "cpu"}, train={"epochs": 7}, train_subset=0,
                                          model_kwargs={"width": 8}))
    assert (changed.config.seeds, changed.config.device, changed.config.train.epochs) == (3, "cpu", 7)
    assert changed.train_subset is None and changed.model_kwargs == {"width": 8}


def test_per_variant_options_replace_or_refine_the_presets_values():
    three = ["bn", "identity", "groupnorm"]
    every = build_study("potgieter2025", "cifar10", changes=_changes(three, lr="0.05")).config
    assert every.train.lr == 0.05 and every.overrides == {}  # a bare value is every variant's
    one = build_study("potgieter2025", "cifar10", changes=_changes(three, lr="identity=5e-4")).config
    assert one.train.lr == 1e-3  # bn keeps the preset's; every BN-free variant keeps its own unless named
    assert one.overrides == {"identity": {"lr": 5e-4}, "groupnorm": {"lr": 1e-4}}
    clipped = build_study("potgieter2025", "mnist", changes=_changes(["bn", "identity"], agc="0.01")).config
    assert clipped.train_for("identity").agc == 0.01 and clipped.train_for("bn").agc is None  # as in bnprobe run


def test_subset_is_the_same_images_every_time_and_model_arguments_reach_the_model():
    split = Split(torch.arange(50.0).view(50, 1, 1, 1), torch.arange(50) % 10)
    first, again = subset(split, 20), subset(split, 20)
    assert len(first) == 20 and torch.equal(first.x, again.x) and len(set(first.x.flatten().tolist())) == 20
    assert subset(split, None) is split and subset(split, 80) is split
    data = Dataset("mnist", split, split, 10)
    build = model_factory("cnn4", {"width": 8}, data)
    assert build.__name__ == "cnn4(width=8)" and build().features[0].out_channels == 8
    with pytest.raises(BnprobeError, match="does not take depth"):
        model_factory("cnn4", {"depth": 3}, data)()


def test_generalisation_gap_is_train_minus_test_paired_by_seed():
    runs = [RunResult("bn", 0, 0.90, 0.80, 0.1), RunResult("identity", 0, 0.90, 0.70, 0.1),
            RunResult("bn", 1, 0.95, 0.85, 0.1), RunResult("identity", 1, 0.80, 0.70, 0.1)]
    reproduction = assess(build_study("potgieter2025", "mnist"), Results("cnn4", "mnist", {}, runs, layers=["l0"]))
    assert reproduction.gaps["bn"].mean == pytest.approx(0.10) and reproduction.gaps["bn"].n == 2
    assert reproduction.gaps["identity"].mean == pytest.approx(0.15)  # gaps 0.2 and 0.1
    assert reproduction.gap_differences["identity"].estimate == pytest.approx(0.05)  # (0.1 + 0.0) / 2
    saved = reproduction.to_dict()
    assert [(v["key"], v["verdict"]) for v in saved["verdicts"]] == [("a1", "UNDECIDED"), ("a2", "UNDECIDED"),
                                                                     ("b", "UNDECIDED")]  # no probe numbers
    assert saved["generalisation_gap"]["bn"]["difference"] is None
    assert saved["flagged_runs"] == []


def test_verdicts_name_the_flagged_runs_they_rest_on():
    lagging = RunResult("bn", 0, 0.60, 0.10, 0.1, flags=[{"name": "eval_below_train", "message": "lags"}])
    runs = [lagging, RunResult("identity", 0, 0.90, 0.70, 0.1)]
    study = build_study("potgieter2025", "mnist", changes=Changes(study={"variants": ["bn", "identity"]}))
    reproduction = assess(study, Results("cnn4", "mnist", {}, runs, layers=["l0"]))
    assert reproduction.to_dict()["flagged_runs"] == [{"variant": "bn", "seed": 0, "flags": ["eval_below_train"]}]
    console = Console(width=80, record=True)
    render_reproduction(reproduction, console)
    assert "caution: they rest on 1 flagged run (bn seed 0: eval_below_train); see the flags above" in \
        " ".join(console.export_text().split())


def test_list_names_each_preset_and_dataset():
    result = _run("reproduce", "--list")
    assert result.exit_code == 0
    assert "potgieter2025: Potgieter, Mouton & Davel (2025)" in result.output
    assert "--dataset fashion-mnist: cnn4, the mnist recipe" in result.output
    assert "--dataset cifar10: vgg16_cifar" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["potgieter2024", "--dataset", "mnist"], "unknown preset 'potgieter2024'; presets: potgieter2025"),
    ([], "name a preset; presets: potgieter2025"),
    (["potgieter2025", "--dataset", "digits"], "no recipe for dataset 'digits'; datasets: cifar10, fashion-mnist"),
    (["potgieter2025"], "needs --dataset: one of cifar10, fashion-mnist, mnist"),
    (["potgieter2025", "--dataset", "mnist", "--variants", "identity,groupnorm"], "--variants needs bn"),
    (["potgieter2025", "--dataset", "mnist", "--train-subset", "-5"], "train_subset must be a positive number"),
    (["potgieter2025", "--dataset", "mnist", "--lr", "fast"], "--lr: 'fast' is not a number"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = _run("reproduce", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_reproduce_end_to_end_on_tiny_mnist_files(tmp_path):
    _write_idx(tmp_path / "data", arrays=_mnist_arrays(n_train=300, n_test=60))
    out = tmp_path / "out"
    result = _run("reproduce", "potgieter2025", "--dataset", "mnist", "--data-root", str(tmp_path / "data"),
                  "--epochs", "1", "--seeds", "2", "--samples", "50", "--train-subset", "200", "--device", "cpu",
                  "--out", str(out), "--quiet")  # the preset's 2 sample sets x 2 seeds x 50: all 200 images
    assert result.exit_code == 0, result.output
    output = result.output
    words = " ".join(output.split())  # the console wraps at 80 columns
    assert "sgd lr 0.01" in words and "train subset 200" in words and "in each of 2 disjoint sets per seed" in words
    assert "sparsity — channel_sparsity (mean ± std over 2 seeds)" in output and "hdbscan — ari" in output
    assert "generalisation gap (train − test accuracy, mean ± std over 2 seeds)" in output
    findings = ("(a1) removing BN changes representational sparsity: ",
                "(a2) sparsity is not a significant factor affecting generalisation: ",
                "(b) BN representations cluster better: ")
    for finding in findings:
        line = next(line for line in output.splitlines() if finding in line)
        assert line.split(": ")[-1] in ("HOLDS", "DOES NOT HOLD", "UNDECIDED")
    assert output.count("rule: ") == 3 and output.count("evidence: ") == 3
    saved = json.loads((out / "verdicts.json").read_text())
    assert (saved["preset"], saved["dataset"], saved["train_subset"]) == ("potgieter2025", "mnist", 200)
    assert [f"({v['key']}) {v['finding']}: " for v in saved["verdicts"]] == list(findings)
    assert all(v["verdict"] in ("HOLDS", "DOES NOT HOLD", "UNDECIDED") and v["rule"] for v in saved["verdicts"])
    a1 = saved["verdicts"][0]["numbers"]["layers"]  # the per-layer intervals behind a verdict are saved
    assert a1 and all({"estimate", "low", "high", "reading"} <= set(layer) for layer in a1.values())
    assert len(saved["verdicts"][1]["numbers"]["runs"]) == 4
    assert saved["generalisation_gap"]["bn"]["n"] == 2 and saved["generalisation_gap"]["identity+bias"]["difference"]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["samples_probed"] == 50 and results["config"]["sample_sets"] == 2
    assert len(results["runs"]) == 6 and all(len(run["sample_sets"]) == 2 for run in results["runs"])
    assert all("spread" in layer for layer in a1.values())  # seeds against samples, per layer
    assert [run["epochs_run"] for run in results["runs"] if run["variant"] == "init"] == [0, 0]
    assert "init (model as built, not trained)" in output
    assert (out / "plots" / "sparsity.png").is_file()

    again = _run("reproduce", "potgieter2025", "--dataset", "mnist", "--data-root", str(tmp_path / "data"),
                 "--epochs", "1", "--seeds", "2", "--samples", "50", "--train-subset", "200", "--device", "cpu",
                 "--out", str(out), "--quiet", "--resume", "--json")  # the finished runs are kept: no training
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)  # stdout is the JSON alone; the recipe lines went to stderr
    assert summary["reproduction"]["verdicts"] == saved["verdicts"]
    assert summary["reproduction"]["generalisation_gap"] == saved["generalisation_gap"]
    bn = [r for r in results["runs"] if r["variant"] == "bn"]
    accuracy = summary["probes"]["run"]["model"]["test_accuracy"]["bn"]
    assert accuracy["n"] == 2 and accuracy["mean"] == pytest.approx(sum(r["test_accuracy"] for r in bn) / 2)
    assert "sgd lr 0.01" in again.stderr and "rule: " not in again.stderr  # no tables beside the JSON
