"""Robustness of the verdicts: a finished reproduction re-probed under a grid of HDBSCAN settings."""

import json
import shutil

import pytest
from _cli import assert_one_line_error, run_cli
from test_datasets import _mnist_arrays, _write_idx

from bnprobe.errors import BnprobeError
from bnprobe.report import Results
from bnprobe.reproduce._presets import Changes, assess, build_study, reproduce, study_inputs
from bnprobe.reproduce._robustness import grid_probes, parse_grid, robustness
from bnprobe.study import reprobe_study
from bnprobe.study._dir import remove_study

OPTIONS = ["--epochs", "1", "--seeds", "2", "--samples", "30", "--train-subset", "120", "--device", "cpu"]
GRID = {"dims": [10, 50], "min_cluster_size": [5, 10]}  # (50, 10) is the preset's own setting


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny potgieter2025 reproduction on MNIST-format files: (study, its folder)."""
    root = tmp_path_factory.mktemp("robustness")
    _write_idx(root / "data", arrays=_mnist_arrays(n_train=150, n_test=40))
    study = build_study("potgieter2025", "mnist", changes=Changes(
        study={"seeds": 2, "samples": 30, "device": "cpu", "data_root": str(root / "data")}, train={"epochs": 1},
        train_subset=120))
    reproduce(study, out=root / "study")
    return study, root / "study"


def test_grid_reprobes_the_kept_weights_and_leaves_the_study_as_it_was(finished, tmp_path, monkeypatch):
    study, saved = finished
    out = tmp_path / "study"
    shutil.copytree(saved, out)
    before = (out / "results.json").read_bytes()
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("robustness trained a model")

    monkeypatch.setattr("bnprobe.study._run.train_model", no_training)
    outcome = robustness(study, out, grid=GRID)

    assert (out / "results.json").read_bytes() == before  # the study's own numbers are untouched
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == checkpoints
    assert [s.params for s in outcome.settings] == [{"dims": 10, "min_cluster_size": 5},
                                                    {"dims": 10, "min_cluster_size": 10},
                                                    {"dims": 50, "min_cluster_size": 5},
                                                    {"dims": 50, "min_cluster_size": 10}]
    assert [s.study for s in outcome.settings] == [False, False, False, True]
    assert outcome.settings[3].probe == "hdbscan"  # the study's cell reads the study's numbers
    own = assess(study, Results.load(out)).verdicts
    assert [(v.finding, v.holds, v.evidence) for v in outcome.settings[3].verdicts] == [
        (v.finding, v.holds, v.evidence) for v in own]  # the study's column is the study's verdicts
    counts = outcome.counts()
    assert len(counts) == len(outcome.findings()) == len(own) >= 2
    assert all(sum(c.values()) == 4 for c in counts)
    sparsity = [i for i, finding in enumerate(outcome.findings()) if "sparsity" in finding]
    assert sparsity and all(len({s.verdicts[i].holds for s in outcome.settings}) == 1 for i in sparsity)

    study_results, grid_results = Results.load(out), Results.load(out / "robustness")
    for old, new in zip(study_results.runs, grid_results.runs, strict=True):
        assert (new.train_accuracy, new.test_accuracy, new.history) == (old.train_accuracy, old.test_accuracy,
                                                                       old.history)
        assert new.probes["hdbscan"] == old.probes["hdbscan"] and new.probes["sparsity"] == old.probes["sparsity"]
        assert {"hdbscan(dims=10,min_cluster_size=5)", "hdbscan(dims=50,min_cluster_size=5)"} <= set(new.probes)
        assert "hdbscan(dims=50)" not in new.probes  # the study's own setting was not computed again
    saved_outcome = json.loads((out / "robustness.json").read_text())
    assert saved_outcome == json.loads(json.dumps(outcome.to_dict()))
    assert all(v["HOLDS"] + v["DOES NOT HOLD"] + v["UNDECIDED"] == v["settings"] == 4
               for v in saved_outcome["verdicts"])
    first = saved_outcome["settings"][0]["verdicts"]
    assert [v["verdict"] for v in first] == [{True: "HOLDS", False: "DOES NOT HOLD", None: "UNDECIDED"}[v.holds]
                                            for v in outcome.settings[0].verdicts]


def test_the_study_setting_reprobed_gives_the_studys_numbers(finished, tmp_path):
    """Why reusing the study's numbers for its own cell is clean: computing them again changes nothing."""
    study, saved = finished
    out = tmp_path / "study"
    shutil.copytree(saved, out)
    dataset, model = study_inputs(study)
    again = reprobe_study(out, ["hdbscan(dims=50)"], dataset=dataset, model=model, device="cpu")
    for run in again.runs:
        assert run.probes["hdbscan(dims=50)"] == run.probes["hdbscan"]


def test_cli_resume_on_the_finished_study_prints_the_table_without_training(finished, tmp_path):
    study, saved = finished
    out = tmp_path / "study"
    shutil.copytree(saved, out)
    before = (out / "results.json").read_bytes()
    args = ["reproduce", "potgieter2025", "--dataset", "mnist", "--data-root", study.config.data_root, *OPTIONS,
            "--out", out, "--resume", "--quiet", "--robustness-grid", "dims=[10,50], min_cluster_size=10"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert (out / "results.json").read_bytes() == before
    lines = result.output.splitlines()
    assert "robustness (hdbscan re-run, nothing retrained); columns dims/min_cluster_size" in lines
    assert "50/10*" in result.output and max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.lstrip().startswith(("(a)", "(b)", "(a1)", "(a2)"))
            and line.rstrip().endswith("of 2")]
    saved_outcome = json.loads((out / "robustness.json").read_text())
    assert len(rows) == len(saved_outcome["verdicts"]) >= 2  # one row per verdict, ending in "k of 2"
    assert saved_outcome["grid"] == {"dims": [10, 50], "min_cluster_size": [10]}
    for row, verdict in zip(rows, saved_outcome["verdicts"], strict=True):
        assert row.rstrip().endswith(f"{verdict['HOLDS']} of 2")

    as_json = run_cli(*args, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["robustness"]["verdicts"] == saved_outcome["verdicts"]


@pytest.mark.parametrize(("grid", "message"), [
    ("dims=[10,0]", "dims must be"),
    ("depth=[2]", "depth is no hdbscan parameter"),
    ("dims=[50,'auto']", "are the same setting"),
    ("dims", "cannot read robustness grid"),
])
def test_a_bad_grid_is_one_line_before_anything_trains(tmp_path, grid, message):
    out = tmp_path / "never"
    result = run_cli("reproduce", "potgieter2025", "--dataset", "mnist", *OPTIONS, "--out", out,
                     "--robustness-grid", grid)
    assert_one_line_error(result, message)
    assert not out.exists()


def test_robustness_without_kept_weights_is_one_line_before_anything_trains(tmp_path):
    out = tmp_path / "never"
    result = run_cli("reproduce", "potgieter2025", "--dataset", "mnist", *OPTIONS, "--out", out, "--robustness",
                     "--checkpoints", "none")
    assert_one_line_error(result, "--checkpoints none")
    assert not out.exists()


def test_parse_grid_reads_lists_and_single_values():
    assert parse_grid("dims=[20, 50], min_cluster_size=10") == {"dims": [20, 50], "min_cluster_size": [10]}
    study = build_study("potgieter2025", "mnist")
    with pytest.raises(BnprobeError, match="robustness grid: dims has no values"):
        grid_probes(study, {"dims": []})


def test_overwriting_the_study_removes_its_robustness_outcome(finished, tmp_path):
    study, saved = finished
    out = tmp_path / "study"
    shutil.copytree(saved, out)
    robustness(study, out, grid={"dims": [10]})
    (out / "notes.txt").write_text("mine")
    remove_study(out)  # what --overwrite removes first: a stale robustness.json would outlive the new study
    assert not (out / "robustness.json").exists() and not (out / "robustness").exists()
    assert (out / "notes.txt").read_text() == "mine"
