import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnprobe.cli import cli

TINY = ["--epochs", "1", "--samples", "120", "--batch-size", "64", "--device", "cpu"]


def _run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "cnn4"
    result = _run("run", "cnn4", "--variants", "bn,identity,groupnorm", "--seeds", "2", "--out", str(out), *TINY)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_writes_results_with_the_documented_shape(study):
    out, _ = study
    data = json.loads((out / "results.json").read_text())
    assert {"model", "dataset", "config", "runs", "layers", "schema_version"} <= set(data)
    assert data["model"] == "cnn4" and data["dataset"] == "digits"
    assert [(r["variant"], r["seed"]) for r in data["runs"]] == [
        ("bn", 0), ("identity", 0), ("groupnorm", 0), ("bn", 1), ("identity", 1), ("groupnorm", 1)]
    assert data["layers"] == ["features.2", "features.5", "features.9", "features.12"]
    run = data["runs"][1]
    assert 0.0 <= run["train_accuracy"] <= 1.0 and 0.0 <= run["test_accuracy"] <= 1.0
    assert run["swap"]["n_swapped"] == 4
    layer = run["probes"]["sparsity"]["features.2"]
    assert 0.0 <= layer["channel_sparsity"] <= 1.0 and "dead_channel_fraction" in layer
    assert {"n_clusters", "noise_fraction", "ari", "nmi"} <= set(run["probes"]["hdbscan"]["features.12"])
    assert data["config"]["samples_probed"] == 120
    assert [r["epoch"] for r in run["history"]] == [1] and run["history"][0]["test_accuracy"] == run["test_accuracy"]
    assert (out / "history.csv").read_text().startswith("variant,seed,epoch,metric,value\n")
    assert not list(out.glob(".results.json.*"))  # no temp files left behind


def test_run_output_shows_tables_and_swaps(study):
    _, output = study
    assert "identity seed 0: 4 norm layers swapped" in output
    assert "sparsity — channel_sparsity (mean ± std over 2 seeds)" in output
    assert "hdbscan — ari" in output
    for heading in ("bn (model as built)", "identity (4 norm layers swapped)", "groupnorm (4 norm layers swapped)"):
        assert heading in output
    assert " ± " in output
    assert re.search(r"^\[6/6\] groupnorm seed 1 done in .*\(train .*, capture .*, probe .*\)", output, re.M)
    assert "fusion is off" not in output  # an internal note: --verbose only


def test_report_renders_again_from_disk(study):
    out, _ = study
    result = _run("report", str(out))
    assert result.exit_code == 0
    assert "features.12" in result.output and "groupnorm" in result.output


def test_torchvision_resnet18_on_digits_with_json_summary(tmp_path):
    result = _run("run", "tv:resnet18", "--variants", "bn,identity", "--probes", "sparsity", "--out",
                  str(tmp_path), "--json", *TINY)
    assert result.exit_code == 0, result.output
    layers = json.loads((tmp_path / "results.json").read_text())["layers"]
    assert layers[:3] == ["relu", "layer1.0.relu#0", "layer1.0.relu#1"]
    summary = json.loads(result.stdout)  # stdout holds only the JSON; tables and progress go elsewhere
    assert summary["model"] == "tv:resnet18"


def test_run_writes_csv_and_plots(study):
    out, _ = study
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "variant,seed,probe,layer,metric,value"
    assert any(r.startswith("identity,1,sparsity,features.2,channel_sparsity,") for r in rows)
    assert (out / "plots" / "sparsity.png").stat().st_size > 1000
    assert (out / "plots" / "accuracy.png").is_file()


def test_checkpoint_is_loaded_into_every_variant(tmp_path):
    import torch

    from bnprobe.models import create_model

    weights = create_model("cnn4", num_classes=10, in_chans=1).state_dict()
    weights["features.1.running_mean"] = torch.full_like(weights["features.1.running_mean"], 3.0)
    torch.save({"state_dict": weights}, tmp_path / "w.pt")
    out = tmp_path / "o"
    result = _run("run", "cnn4", "--variants", "bn,frozen", "--probes", "sparsity", "--checkpoint",
                  str(tmp_path / "w.pt"), "--out", str(out), "--epochs", "1", "--samples", "50", "--device", "cpu")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["init_weights"] == str(tmp_path / "w.pt")
    bad = _run("run", "cnn4", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out), "--overwrite")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert "missing.pt not found" in bad.output
    assert json.loads((out / "results.json").read_text()) == saved  # refused before the study was removed


@pytest.mark.parametrize(("args", "message"), [
    (["run", "resnet18x"], "closest names: resnet18"),
    (["run", "cnn4", "--variants", "bn,nonorm"], "unknown variant 'nonorm'; valid variants: bn, identity"),
    (["run", "cnn4", "--probes", "sparsity,kmeans"], "unknown probe 'kmeans'; available:"),
    (["run", "convnext_atto"], "has no BatchNorm layer: there is nothing to compare"),
    (["run", "cnn4", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["report", "/nonexistent/study"], "no results at"),
    (["run", "cnn4", "--max-memory", "lots"], "--max-memory: cannot read 'lots' as a size"),
    (["run", "cnn4", "--max-device-memory", "-1"], "--max-device-memory: cannot read '-1'; write auto"),
    (["run", "cnn4", "--probe-workers", "many"], "--probe-workers: cannot read 'many'; give a number"),
    (["run", "cnn4", "--variants", "bn,groupnorm:x"], "groupnorm"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = _run(*args, "--out", str(tmp_path / "o")) if args[0] == "run" else _run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_probes_lists_builtins():
    result = _run("probes")
    assert result.exit_code == 0
    for name in ("sparsity", "hdbscan"):
        assert name in result.output
    assert "…" not in result.output and "n_steps=50" in result.output  # defaults whole at 80 columns


def test_console_script_is_installed():
    import shutil
    import subprocess
    import sys

    exe = shutil.which("bnprobe") or str(Path(sys.executable).parent / "bnprobe")
    proc = subprocess.run([exe, "run", "no_such_model_xyz"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown model") and "Traceback" not in proc.stderr
