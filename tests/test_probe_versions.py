"""A study records the version of each probe, and never files runs measured under two versions together."""

import json

import pytest

from bnprobe.errors import BnprobeError
from bnprobe.probes import build_probes
from bnprobe.study import StudyConfig, StudyListener, reprobe_study, run_study
from bnprobe.train import TrainConfig


class _StopInIdentity(StudyListener):
    def epoch_done(self, variant, seed, epoch, metrics):
        if variant == "identity":
            raise KeyboardInterrupt


def _config(probes):
    return StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn", "identity"], samples=16, probes=probes,
                       device="cpu", probe_workers=0, train=TrainConfig(epochs=1, batch_size=32))


def _interrupted(out, probes, *, saved_before_versions):
    """A study stopped after its bn run, its results.json as bnprobe wrote it before it recorded versions."""
    with pytest.raises(KeyboardInterrupt):
        run_study(_config(probes), out=out, listener=_StopInIdentity())
    path = out / "results.json"
    saved = json.loads(path.read_text())
    assert saved["config"]["probe_versions"] == {p.key: p.version for p in build_probes(probes)}
    if saved_before_versions:
        del saved["config"]["probe_versions"]
        path.write_text(json.dumps(saved))


def test_binary_patterns_is_at_version_2_and_the_others_at_1():
    versions = {p.key: p.version for p in build_probes(["sparsity", "hdbscan", "binary_patterns"])}
    assert versions == {"sparsity": 1, "hdbscan": 1, "binary_patterns": 2}


def test_a_study_of_version_1_probes_saved_before_versions_resumes(tmp_path):
    out = tmp_path / "o"
    _interrupted(out, ["sparsity"], saved_before_versions=True)
    results = run_study(_config(["sparsity"]), out=out, resume=True)
    assert [run.variant for run in results.runs] == ["bn", "identity"]
    assert json.loads((out / "results.json").read_text())["config"]["probe_versions"] == {"sparsity": 1}


def test_runs_measured_by_an_older_version_are_not_resumed_beside_new_ones_until_probed_again(tmp_path):
    out = tmp_path / "o"
    _interrupted(out, ["sparsity", "binary_patterns"], saved_before_versions=True)
    before = (out / "results.json").read_text()
    with pytest.raises(BnprobeError, match=r"measured with binary_patterns version 1 \(this bnprobe's is 2\)"
                                           r".*reprobe_study\(.*probes=\['binary_patterns'\]\)"):
        run_study(_config(["sparsity", "binary_patterns"]), out=out, resume=True)
    assert (out / "results.json").read_text() == before  # refused before anything was written

    reprobe_study(out, probes=["binary_patterns"], device="cpu", probe_workers=0)
    versions = json.loads((out / "results.json").read_text())["config"]["probe_versions"]
    assert versions["binary_patterns"] == 2 and versions.get("sparsity", 1) == 1  # unrecorded: version 1
    results = run_study(_config(["sparsity", "binary_patterns"]), out=out, resume=True)
    assert [run.variant for run in results.runs] == ["bn", "identity"]


def test_the_command_line_names_the_command_that_probes_the_study_again(tmp_path):
    from click.testing import CliRunner

    from bnprobe.cli import cli

    out = tmp_path / "o"
    _interrupted(out, ["sparsity", "binary_patterns"], saved_before_versions=True)
    result = CliRunner().invoke(cli, ["run", "cnn4", "--dataset", "tiny-study", "--variants", "bn,identity",
                                       "--samples", "16", "--probes", "sparsity,binary_patterns", "--device", "cpu",
                                       "--epochs", "1", "--batch-size", "32", "--probe-workers", "0",
                                       "--out", str(out), "--resume"])
    assert result.exit_code == 2, result.output
    assert f"bnprobe probe {out} --probes binary_patterns" in result.output and "Traceback" not in result.output
