"""Nothing overwritten: a study in --out is refused unless resumed or replaced, and replacing it removes
only the study's own files; unreadable checkpoints are one line; Ctrl-C says how to resume."""

import io
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from _cli import assert_one_line_error, finished_study, run_cli
from click.testing import CliRunner

from bnprobe.cli import cli
from bnprobe.errors import BnprobeError, StudyInterrupted
from bnprobe.models import create_model, load_checkpoint
from bnprobe.reproduce import build_study, reproduce
from bnprobe.study import StudyConfig, StudyListener, run_study
from bnprobe.study._dir import remove_study
from bnprobe.train import TrainConfig, load_train_state

TINY = ["--dataset", "tiny-study", "--epochs", "1", "--samples", "16", "--batch-size", "32", "--device", "cpu",
        "--probes", "sparsity", "--quiet"]
REFUSED = "already holds a study"


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return finished_study(tmp_path_factory, TINY)


@pytest.fixture
def study(finished, tmp_path):
    """A copy of the finished study, with the user's own files beside (and inside) the study's."""
    out = tmp_path / "study"
    shutil.copytree(finished, out)
    (out / "notes.txt").write_text("mine")
    (out / "plots" / "sketch.txt").write_text("mine")
    (out / "plots" / "figure1.png").write_bytes(b"mine")  # a figure of the user's, with a CSV of their own
    (out / "plots" / "figure1.csv").write_text("layer,value\n")
    (out / "checkpoints" / "pretrained.pt").write_bytes(b"mine")
    (out / "cache").mkdir()
    (out / "cache" / "mine.txt").write_text("mine")
    return out


def test_a_second_study_into_the_same_folder_is_refused_and_changes_nothing(finished):
    before = _files(finished)
    assert_one_line_error(run_cli("run", "cnn4", "--variants", "identity", "--out", finished, *TINY),
                    f"{finished} {REFUSED} (results.json, 2 run checkpoints in checkpoints/)", "--resume",
                    "--overwrite")
    assert _files(finished) == before


def test_checkpoints_alone_are_a_study_too(finished, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(finished / "checkpoints", out / "checkpoints")
    assert_one_line_error(run_cli("run", "cnn4", "--out", out, *TINY), f"{REFUSED} (2 run checkpoints in checkpoints/)")
    assert sorted(p.name for p in out.rglob("*")) == ["bn-seed0.pt", "checkpoints", "identity-seed0.pt"]


def test_a_folder_with_only_the_users_files_is_no_study(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "pretrained.pt").write_bytes(b"mine")
    result = run_cli("run", "cnn4", "--variants", "bn", "--out", tmp_path, *TINY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["bn-seed0.pt", "pretrained.pt"]


def test_the_python_api_refuses_before_the_data_are_loaded(finished, monkeypatch):
    import bnprobe.reproduce._presets as presets
    import bnprobe.study._run as study_module

    before = _files(finished)
    monkeypatch.setattr(study_module, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    monkeypatch.setattr(presets, "load_study_dataset", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(BnprobeError, match=REFUSED):
        run_study(StudyConfig(model="cnn4", probes=["sparsity"], device="cpu"), out=finished)
    with pytest.raises(BnprobeError, match=REFUSED):
        reproduce(build_study("potgieter2025", "mnist", quick=True), out=finished)
    with pytest.raises(BnprobeError, match="resume=True and overwrite=True do not go together"):
        reproduce(build_study("potgieter2025", "mnist", quick=True), out=finished, resume=True, overwrite=True)
    assert _files(finished) == before


@pytest.mark.parametrize("command", [["run", "cnn4"], ["reproduce", "potgieter2025", "--dataset", "mnist"]])
def test_resume_and_overwrite_together_is_an_error(finished, command):
    before = _files(finished)
    assert_one_line_error(run_cli(*command, "--out", finished, "--resume", "--overwrite"),
                    "--resume and --overwrite do not go together")
    assert _files(finished) == before


def test_reproduce_into_a_study_is_refused(finished):
    before = _files(finished)
    assert_one_line_error(run_cli("reproduce", "potgieter2025", "--dataset", "mnist", "--quick", "--out", finished),
                    REFUSED)
    assert _files(finished) == before


def test_overwrite_removes_the_old_studys_files_and_nothing_else(study):
    (study / "checkpoints" / "groupnorm-seed3.pt").write_bytes(b"stale run of another study")
    (study / "cache" / "bn-seed0").mkdir()
    (study / ".results.json.x1y2.tmp").write_text("half a write")
    (study / "verdicts.json").write_text("{}")
    (study / "history.csv").write_text("epoch\n")
    result = run_cli("run", "cnn4", "--variants", "identity", "--out", study, "--overwrite", *TINY)
    assert result.exit_code == 0, result.output
    saved = json.loads((study / "results.json").read_text())
    assert [(r["variant"], r["seed"]) for r in saved["runs"]] == [("identity", 0)]
    assert sorted(p.name for p in (study / "checkpoints").iterdir()) == ["identity-seed0.pt", "pretrained.pt"]
    assert not (study / "verdicts.json").exists() and not (study / ".results.json.x1y2.tmp").exists()
    assert not (study / "history.csv").exists() or "identity" in (study / "history.csv").read_text()
    assert [p.name for p in (study / "cache").iterdir()] == ["mine.txt"]
    for mine in ("notes.txt", "plots/sketch.txt", "cache/mine.txt"):
        assert (study / mine).read_text() == "mine"
    assert (study / "checkpoints" / "pretrained.pt").read_bytes() == b"mine"
    assert (study / "plots" / "accuracy.png").is_file()


def test_overwrite_refuses_to_remove_the_weights_the_new_study_starts_from(study):
    before = _files(study)
    weights = study / "checkpoints" / "bn-seed0.pt"
    assert_one_line_error(run_cli("run", "cnn4", "--variants", "bn,frozen", "--checkpoint", weights, "--out", study,
                         "--overwrite", *TINY), f"--overwrite would remove {weights}", "copy it out of")
    assert _files(study) == before


def test_remove_study_leaves_the_folders_that_hold_the_users_files_only(study):
    remove_study(study)
    assert sorted(str(p.relative_to(study)) for p in study.rglob("*")) == [
        "cache", "cache/mine.txt", "checkpoints", "checkpoints/pretrained.pt", "notes.txt", "plots",
        "plots/figure1.csv", "plots/figure1.png", "plots/sketch.txt"]
    for mine in ("notes.txt", "plots/sketch.txt", "plots/figure1.png", "plots/figure1.csv", "cache/mine.txt"):
        (study / mine).unlink()
    (study / "checkpoints" / "pretrained.pt").unlink()
    (study / "checkpoints" / "bn-seed0.pt").write_bytes(b"x")
    remove_study(study)
    assert list(study.iterdir()) == []  # its own folders go once they are empty


def test_a_study_file_may_overwrite(study, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('model = "cnn4"\nvariants = ["bn"]\noverwrite = true\nprobes = ["sparsity"]\n'
                    'dataset = "tiny-study"\nepochs = 1\nsamples = 16\ndevice = "cpu"\ncheckpoints = "resume"\n')
    result = run_cli("run", "--config", path, "--out", study, "--quiet")
    assert result.exit_code == 0, result.output
    assert [r["variant"] for r in json.loads((study / "results.json").read_text())["runs"]] == ["bn"]
    assert "optimizer" in load_train_state(study / "checkpoints" / "bn-seed0.pt")  # the file's checkpoints
    assert not (study / "checkpoints" / "identity-seed0.pt").exists()
    assert_one_line_error(run_cli("run", "--config", path, "--out", study, "--resume"), "do not go together")
    again = run_cli("run", "--config", path, "--out", study, "--resume", "--no-overwrite")
    assert again.exit_code == 0, again.output


def _junk_files(folder: Path) -> list[Path]:
    """Files that are not checkpoints, of the kinds torch.load fails on in different ways."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.txt", "not a checkpoint")
    made = {"random.bin": os.urandom(4096), "archive.zip": buffer.getvalue(), "list.pkl": pickle.dumps([1, 2, 3]),
            "notes.txt": b"these are my notes\nnot weights\n", "empty.pt": b"",
            "cut.pt": (folder.parent / "whole.pt").read_bytes()[:3000]}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in made]


@pytest.fixture
def junk(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    torch.save(create_model("cnn4", num_classes=10, in_chans=1).state_dict(), tmp_path / "whole.pt")
    return _junk_files(folder)


def test_a_file_that_is_not_a_checkpoint_is_one_line_wherever_it_is_read(junk):
    model = create_model("cnn4", num_classes=10, in_chans=1)
    for path in junk:
        for load in (lambda p: load_checkpoint(model, p), load_train_state):
            with pytest.raises(BnprobeError) as err:
                load(path)
            message = str(err.value)
            assert message.startswith(f"cannot read checkpoint {path} (") and "\n" not in message, message
            assert "weights_only" not in message and "Traceback" not in message


def test_a_junk_checkpoint_given_to_run_is_one_line(junk, tmp_path):
    for path in junk:
        assert_one_line_error(run_cli("run", "cnn4", "--checkpoint", path, "--out", tmp_path / "o", *TINY),
                        f"cannot read checkpoint {path}")
        assert not (tmp_path / "o").exists()


def test_a_junk_run_checkpoint_stops_probe_in_one_line(study, junk):
    shutil.copyfile(junk[0], study / "checkpoints" / "bn-seed0.pt")
    assert_one_line_error(run_cli("probe", study, "--probes", "sparsity", "--device", "cpu", "--quiet"),
                    "cannot read checkpoint", "bn-seed0.pt", "delete it to train that run again")


class _InterruptIdentity(StudyListener):
    def epoch_done(self, variant, seed, epoch, metrics):
        if variant == "identity":
            raise KeyboardInterrupt


def test_an_interrupted_study_names_its_finished_runs(tmp_path, monkeypatch):
    import bnprobe.study._run as study_module

    config = StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn", "identity"], samples=16,
                         probes=["sparsity"], device="cpu", train=TrainConfig(epochs=2, batch_size=32))
    with pytest.raises(StudyInterrupted) as err:
        run_study(config, out=tmp_path, listener=_InterruptIdentity())
    assert err.value.finished == [("bn", 0)]
    with pytest.raises(StudyInterrupted) as err:  # resumed and stopped again: bn is kept
        run_study(config, out=tmp_path, listener=_InterruptIdentity(), resume=True)
    assert err.value.finished == [("bn", 0)]

    def ctrl_c(_config):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_module, "prepare_dataset", ctrl_c)  # Ctrl-C while the data load
    with pytest.raises(StudyInterrupted) as err:
        run_study(config, out=tmp_path, resume=True)
    assert err.value.finished == [("bn", 0)]
    with pytest.raises(StudyInterrupted) as err:
        run_study(config, out=tmp_path, overwrite=True)
    assert err.value.finished == []  # the new study had filed nothing (and the old one is still there)
    assert [r["variant"] for r in json.loads((tmp_path / "results.json").read_text())["runs"]] == ["bn"]


def _bnprobe(*args, cwd):
    """``python -m bnprobe ARGS`` in a child process, with this checkout's bnprobe."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "bnprobe", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finished_runs(folder: Path) -> list:
    found = list(folder.glob("runs/*/results.json"))
    try:
        return json.loads(found[0].read_text())["runs"] if found else []
    except (json.JSONDecodeError, OSError):
        return []


def test_ctrl_c_says_which_runs_finished_and_the_command_that_resumes(tmp_path):
    args = ["run", "cnn4", "--variants", "bn,identity,groupnorm", "--seeds", "3", "--epochs", "1", "--samples", "40",
            "--probes", "sparsity", "--device", "cpu", "--probe-workers", "0", "--quiet"]  # 9 runs: time to interrupt
    child = _bnprobe(*args, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not _finished_runs(tmp_path) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    line = stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line and "Aborted" not in line, stderr
    (out,) = (tmp_path / "runs").iterdir()
    kept = json.loads((out / "results.json").read_text())["runs"]
    assert 1 <= len(kept) < 9, "the study finished before the signal; nothing was interrupted"
    finished = ", ".join(f"{run['variant']} seed {run['seed']}" for run in kept)
    assert line.startswith(f"interrupted; finished runs: {finished}; resume with: "), line
    command = shlex.split(line.partition("resume with: ")[2])
    assert command == ["python", "-m", "bnprobe", *args, "--resume", "--out", str(out.relative_to(tmp_path))]

    resumed = _bnprobe(*command[3:], cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [(v, seed) for seed in range(3) for v in ("bn", "identity",
                                                                                                   "groupnorm")]
    assert runs[:len(kept)] == kept  # the finished runs were kept as they were


def _interrupted_after_bn(*_args, **_kwargs):
    raise StudyInterrupted([("bn", 0)])


@pytest.mark.parametrize(("command", "study_file", "resume"), [
    (["reproduce", "potgieter2025", "--dataset", "mnist", "--quick", "--overwrite"], "",
     ["reproduce", "potgieter2025", "--dataset", "mnist", "--quick", "--resume", "--out"]),
    (["run", "cnn4", "--lr", "bn=1e-3,identity=5e-4", "--out", "my study", "--overwrite"], "",
     ["run", "cnn4", "--lr", "bn=1e-3,identity=5e-4", "--out", "my study", "--resume"]),
    (["run", "--config", "{file}"], 'model = "cnn4"\nout = "o"\noverwrite = true\n',
     ["run", "--config", "{file}", "--no-overwrite", "--resume"]),
], ids=["reproduce-default-out", "run-quoted", "run-study-file"])
def test_the_resume_command_is_the_users_own_made_to_resume(tmp_path, monkeypatch, command, study_file, resume):
    import bnprobe.reproduce._presets as reproduce_cli
    import bnprobe.study as run_cli

    monkeypatch.setattr(run_cli, "run_study", _interrupted_after_bn)
    monkeypatch.setattr(reproduce_cli, "reproduce", _interrupted_after_bn)
    path = tmp_path / "study.toml"
    path.write_text(study_file)
    command, resume = ([word.format(file=path) for word in words] for words in (command, resume))
    result = CliRunner().invoke(cli, command, prog_name="bnprobe")
    assert result.exit_code == 130, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("interrupted; finished runs: bn seed 0; resume with: "), line
    words = shlex.split(line.partition("resume with: ")[2])
    assert words[:len(resume) + 1] == ["bnprobe", *resume]
    if resume[-1] == "--out":  # filled in: the folder the study wrote to
        assert len(words) == len(resume) + 2 and words[-1].startswith("runs/potgieter2025-mnist-quick-")
    else:
        assert len(words) == len(resume) + 1
