"""--checkpoints: what a finished run keeps (final weights, the whole train state, or nothing), and what
each still allows: bnprobe probe, loading the weights, resuming."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from bnprobe.cli import cli
from bnprobe.data import Split
from bnprobe.errors import BnprobeError
from bnprobe.models import create_model, load_checkpoint
from bnprobe.study import StudyConfig, StudyListener, run_study
from bnprobe.surgery import make_variant
from bnprobe.train import TrainConfig, train_model
from bnprobe.train._state import TRAINING_KEYS, checkpoint_path, keep_final_weights, load_train_state

STUDY = ["cnn4", "--variants", "bn,identity", "--dataset", "tiny-study", "--epochs", "1", "--samples", "16",
         "--batch-size", "32", "--device", "cpu", "--probes", "sparsity", "--quiet"]


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The same tiny study run under each mode."""
    root = tmp_path_factory.mktemp("modes")
    for mode in ("final", "resume", "none"):
        result = _run("run", *STUDY, "--checkpoints", mode, "--out", root / mode)
        assert result.exit_code == 0, result.output
    return root


def test_final_keeps_the_weights_and_drops_what_only_training_needs(studies):
    for variant in ("bn", "identity"):
        final = load_train_state(checkpoint_path(studies / "final", variant, 0))
        whole = load_train_state(checkpoint_path(studies / "resume", variant, 0))
        assert not any(key in final for key in TRAINING_KEYS) and all(key in whole for key in TRAINING_KEYS)
        assert (final["epoch"], final["history"], final["config"]) == (whole["epoch"], whole["history"],
                                                                      whole["config"])
        assert list(final["model"]) == list(whole["model"])  # same keys, same order
        for name, tensor in whole["model"].items():  # the same seed on the CPU: bit-identical weights
            kept = final["model"][name]
            assert kept.dtype == tensor.dtype and kept.shape == tensor.shape and torch.equal(kept, tensor), name
    results = [json.loads((studies / mode / "results.json").read_text()) for mode in ("final", "resume")]
    assert results[0]["runs"] == results[1]["runs"]  # what is kept changes no number


def test_final_weights_take_a_third_of_the_bytes_or_less(tmp_path):
    """Under AdamW a train state is the weights plus two moment buffers as large as the parameters (but
    not the BatchNorm statistics): resnet18's weights are a third of it once not stored tensor by tensor."""
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 10
    total_whole = total_final = 0
    for variant in ("bn", "identity"):
        model = make_variant(create_model("resnet18", num_classes=10), variant)[0]
        path = tmp_path / f"{variant}.pt"
        train_model(model, Split(x, y), config=TrainConfig(epochs=1, batch_size=16), device="cpu", checkpoint=path)
        whole = path.stat().st_size
        keep_final_weights(path)
        total_whole, total_final = total_whole + whole, total_final + path.stat().st_size
        weights = load_train_state(path)["model"]
        assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert total_final <= total_whole / 3, (total_final, total_whole)


def test_probe_and_weights_load_from_final_checkpoints(studies, tmp_path):
    out = tmp_path / "final"
    shutil.copytree(studies / "final", out)
    before = json.loads((out / "results.json").read_text())
    result = _run("probe", out, "--probes", "sparsity", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    after = json.loads((out / "results.json").read_text())
    assert [r["probes"] for r in after["runs"]] == [r["probes"] for r in before["runs"]]  # same weights, same numbers
    model = create_model("cnn4", num_classes=4, in_chans=1)
    load_checkpoint(model, checkpoint_path(out, "bn", 0))
    saved = load_train_state(checkpoint_path(out, "bn", 0))["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    started = _run("run", "cnn4", "--variants", "bn,frozen", "--checkpoint", checkpoint_path(out, "bn", 0),
                   "--out", tmp_path / "from-final", *STUDY[3:])
    assert started.exit_code == 0, started.output


def test_none_removes_the_checkpoints_once_done_and_probe_says_so(studies, tmp_path):
    assert not (studies / "none" / "checkpoints").exists()
    result = _run("probe", studies / "none", "--probes", "sparsity", "--device", "cpu", "--quiet")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "kept no checkpoints (--checkpoints none)" in result.output and "--checkpoints final" in result.output
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "pretrained.pt").write_bytes(b"mine")
    assert _run("run", *STUDY, "--checkpoints", "none", "--out", out).exit_code == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["pretrained.pt"]


class _StopInIdentity(StudyListener):
    def epoch_done(self, variant, seed, epoch, metrics):
        if (variant, epoch) == ("identity", 1):
            raise KeyboardInterrupt


@pytest.mark.parametrize("mode", ["final", "none"])
def test_a_study_resumes_from_a_filed_runs_final_weights(tmp_path, mode):
    out = tmp_path / "o"
    config = StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn", "identity"], samples=16,
                         probes=["sparsity"], device="cpu", checkpoints=mode,
                         train=TrainConfig(epochs=2, batch_size=32))
    with pytest.raises(KeyboardInterrupt):
        run_study(config, out=out, listener=_StopInIdentity())
    filed, running = (load_train_state(checkpoint_path(out, v, 0)) for v in ("bn", "identity"))
    assert "optimizer" not in filed and "optimizer" in running  # the interrupted run can go on
    results = run_study(config, out=out, resume=True)  # the bn reference is captured again from its weights
    assert [(r.variant, r.epochs_run) for r in results.runs] == [("bn", 2), ("identity", 2)]
    assert (out / "checkpoints").exists() == (mode == "final")


def test_a_resume_with_another_checkpoints_mode_is_refused_and_cuts_nothing(studies, tmp_path):
    """A study that kept full checkpoints keeps them: resuming it as ``final`` would cut them for good."""
    out = tmp_path / "resume"
    shutil.copytree(studies / "resume", out)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    result = _run("run", *STUDY, "--checkpoints", "final", "--out", out, "--resume")
    assert result.exit_code == 2 and "checkpoints is 'resume' there and 'final' now" in result.output, result.output
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert "optimizer" in load_train_state(checkpoint_path(out, "bn", 0))


def test_a_final_checkpoint_cannot_continue_an_unfinished_run(tmp_path):
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    config = TrainConfig(epochs=2, batch_size=16)

    def stop(epoch, _metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config,
                    device="cpu", checkpoint=tmp_path / "run.pt", on_epoch=stop)
    keep_final_weights(tmp_path / "run.pt")  # not what a study does to an unfinished run, but a file may say so
    with pytest.raises(BnprobeError, match="keeps final weights only .*; delete it to train that run again"):
        train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config,
                    device="cpu", checkpoint=tmp_path / "run.pt", resume=True)


def test_a_finished_runs_final_weights_evaluate_as_the_whole_state_did(tmp_path):
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    config = TrainConfig(epochs=1, batch_size=16)
    path = tmp_path / "run.pt"
    trained = train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config,
                          device="cpu", checkpoint=path)
    keep_final_weights(path)
    again = train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config,
                        device="cpu", checkpoint=path, resume=True)
    assert (again.train_accuracy, again.final_loss, again.history) == (trained.train_accuracy, trained.final_loss,
                                                                      trained.history)


def test_an_unknown_mode_is_refused():
    with pytest.raises(BnprobeError, match="checkpoints must be one of none, final, resume; got 'all'"):
        StudyConfig(model="cnn4", checkpoints="all")
    result = _run("run", *STUDY, "--checkpoints", "all")
    assert result.exit_code == 2 and "'all' is not one of 'none', 'final', 'resume'" in result.output


def test_reproduce_passes_checkpoints_to_its_study(monkeypatch):
    import bnprobe.reproduce._presets as reproduce_cli

    studies = []

    def capture(study, **_kwargs):
        studies.append(study)
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_cli, "reproduce", capture)
    for given, kept in ((["--checkpoints", "none"], "none"), ([], "final")):
        _run("reproduce", "potgieter2025", "--dataset", "mnist", "--quick", *given)
        assert studies.pop().config.checkpoints == kept
