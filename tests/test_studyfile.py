import json

import pytest
from click.testing import CliRunner

from bnprobe.cli import cli
from bnprobe.errors import BnprobeError
from bnprobe.study import read_study_file

OPTIONS = ["model", "variants", "probes", "lr", "epochs", "samples", "device"]


def test_toml_settings_become_command_line_values(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('model = "cnn4"\nvariants = ["bn", "groupnorm:8"]\nlr = { bn = 0.1, identity = 0.02 }\n'
                    "epochs = 3\n[probes.hdbscan]\nmin_cluster_size = 20\ndims = 30\n[probes.sparsity]\n")
    settings = read_study_file(path, OPTIONS)
    assert settings == {"model": "cnn4", "variants": "bn,groupnorm:8", "lr": "bn=0.1,identity=0.02",
                        "epochs": 3, "probes": "hdbscan(min_cluster_size=20, dims=30),sparsity"}


def test_settings_take_the_option_names_not_the_parameter_names(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('model = "cnn4"\ncompile = true\njson = true\n')
    assert read_study_file(path, {"model": "model", "compile": "compile_", "json": "as_json"}) == \
        {"model": "cnn4", "compile_": True, "as_json": True}
    path.write_text("compile_ = true\n")
    with pytest.raises(BnprobeError, match="unknown setting 'compile_'.*: compile, json, model"):
        read_study_file(path, {"model": "model", "compile": "compile_", "json": "as_json"})


def test_yaml_probe_list(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("model: resnet18\nprobes:\n  - sparsity\n  - {name: hdbscan, exact: true}\n")
    assert read_study_file(path, OPTIONS)["probes"] == "sparsity,hdbscan(exact=True)"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("s.toml", "modle = 'cnn4'\n", "unknown setting 'modle'"),
    ("s.toml", "model = \n", "cannot be read"),
    ("s.json", "{}", "name it .toml, .yaml or .yml"),
])
def test_bad_study_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BnprobeError, match=message):
        read_study_file(path, OPTIONS)


def test_run_from_a_study_file_with_a_command_line_override(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('model = "cnn4"\nvariants = ["bn", "identity"]\nepochs = 1\nsamples = 60\ndevice = "cpu"\n'
                    "seeds = 3\n[probes.sparsity]\neps = 0.01\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", "--config", str(path), "--seeds", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["model"] == "cnn4" and saved["config"]["seeds"] == 1  # the command line won
    assert "sparsity(eps=0.01)" in saved["runs"][0]["probes"]
    path.write_text(path.read_text().replace("seeds = 3\n", "seeds = 1\njson = true\n"))
    as_json = CliRunner().invoke(cli, ["run", "--config", str(path), "--out", str(tmp_path / "j"), "--quiet"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["model"] == "cnn4"  # `json = true` is --json
    bad = CliRunner().invoke(cli, ["run", "--config", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2 and "not found" in bad.output and len(bad.output.strip().splitlines()) == 1
