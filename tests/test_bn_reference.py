"""A sound BN reference: lagging BatchNorm running statistics are flagged (eval_below_train), and
--recalibrate-bn recomputes them after training, in the plain and the fused path."""

import json
import math
from dataclasses import replace

import pytest
import torch
from _cli import assert_one_line_error, run_cli
from torch import nn

from bnprobe._hints import command_line_in_use
from bnprobe.data import Dataset, Split, load_dataset
from bnprobe.errors import BnprobeError
from bnprobe.report import Results, RunResult
from bnprobe.reproduce import Changes, build_study
from bnprobe.study import StudyConfig, reprobe_study, run_study
from bnprobe.train import (
    FusedRun,
    TrainConfig,
    TrainResult,
    checkpoint_path,
    evaluate,
    load_train_state,
    train_fused,
    train_model,
)
from bnprobe.train._bnstats import batch_statistics, batchnorm_layers, cumulative_statistics
from bnprobe.train._flags import chance_threshold, eval_below_train, eval_gap_threshold, run_flags

LAGGING = TrainConfig(epochs=3, batch_size=64, lr=1e-2)
"""A short run whose BatchNorm layers (momentum 0.001, :func:`_lagging_model`) keep nearly their initial statistics."""


def _lagging_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16, momentum=0.001), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32, momentum=0.001), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits) -> dict[bool, tuple[nn.Module, TrainResult]]:
    """The same lagging run trained as it is (False) and recalibrated (True): model and result."""
    models = {recalibrate: _lagging_model() for recalibrate in (False, True)}
    return {recalibrate: (model, train_model(model, digits.train, digits.test, config=LAGGING, device="cpu",
                                             recalibrate_bn=recalibrate))
            for recalibrate, model in models.items()}


def _state(model: nn.Module) -> tuple[dict, dict]:
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            {n: b.clone() for n, b in model.named_buffers()})


def test_lagging_statistics_are_flagged_and_recalibration_fixes_them(digits, trained):
    lagging, fixed = trained[False][1], trained[True][1]
    assert lagging.test_accuracy <= chance_threshold(10, len(digits.test))  # eval mode guesses
    assert lagging.train_mode_test_accuracy > 0.4  # the same weights on batch statistics do not
    assert [f["name"] for f in run_flags(lagging, digits)] == ["at_chance", "eval_below_train"]
    assert not lagging.recalibrated_bn

    assert fixed.recalibrated_bn
    assert fixed.train_mode_test_accuracy == lagging.train_mode_test_accuracy  # same weights (CPU: bit-identical)
    assert abs(fixed.test_accuracy - fixed.train_mode_test_accuracy) < 0.05
    assert fixed.history[-1]["test_accuracy"] == fixed.test_accuracy  # the final, recomputed evaluation
    assert run_flags(fixed, digits) == []


def test_recalibration_changes_only_the_batchnorm_statistics(digits, trained):
    runs = [trained[False][0], trained[True][0]]
    (params_a, buffers_a), (params_b, buffers_b) = _state(runs[0]), _state(runs[1])
    assert all(torch.equal(params_a[n], params_b[n]) for n in params_a)  # the weights are what training left
    assert not torch.allclose(buffers_a["1.running_mean"], buffers_b["1.running_mean"], atol=1e-3)
    assert buffers_b["1.num_batches_tracked"] == math.ceil(len(digits.train) / LAGGING.batch_size)  # one pass
    assert [m.momentum for m in batchnorm_layers(runs[1])] == [0.001, 0.001]  # put back


def test_cumulative_statistics_are_the_mean_over_the_batches_and_flags_are_restored():
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.3), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a mixed state, to be given back as it was
    x = torch.randn(48, 3, 4, 4) * 2 + torch.tensor([1.0, -2.0, 5.0]).view(1, 3, 1, 1)
    with torch.no_grad(), cumulative_statistics(model) as layers:
        assert layers == 1 and model[0].training and not model[1].training and model[0].momentum is None
        for batch in x.split(16):  # equal batches: the average of their means is the mean of all
            model(batch)
    assert torch.allclose(model[0].running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model[0].momentum == 0.3 and model.training and model[0].training and not model[1].training


def test_a_norm_act_layers_dropout_and_activation_stay_in_eval_mode():
    """timm's BatchNormAct2d holds its drop and act as children: only the norm goes to train mode."""
    from timm.layers import BatchNormAct2d

    layer = BatchNormAct2d(3, act_layer=nn.RReLU, drop_layer=nn.Dropout)
    layer.eval()
    for context in (batch_statistics, cumulative_statistics):
        with torch.no_grad(), context(layer):
            assert layer.training and not layer.drop.training and not layer.act.training
        assert not any(m.training for m in layer.modules())


def test_batch_statistics_leave_every_buffer_bit_for_bit(digits, trained):
    model = trained[False][0]
    _, before = _state(model)
    model.train()
    eval_mode = evaluate(model, digits.test, device=torch.device("cpu"))[1]
    batch_mode = evaluate(model, digits.test, device=torch.device("cpu"), batch_size=64, batch_stats=True)[1]
    _, after = _state(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # running stats and batch counts alike
    assert model.training and batch_mode == trained[False][1].train_mode_test_accuracy > eval_mode + 0.2
    with batch_statistics(model):
        assert all(m.training for m in batchnorm_layers(model)) and not model.training


def test_a_model_without_batchnorm_is_measured_once_and_not_recalibrated(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    result = train_model(model, digits.train, digits.test, config=TrainConfig(epochs=1, batch_size=256),
                         device="cpu", recalibrate_bn=True)
    assert result.train_mode_test_accuracy is None and not result.recalibrated_bn
    assert eval_below_train(result, digits) is None


def _numbers(test_accuracy, train_mode, diverged=None) -> TrainResult:
    return TrainResult(train_accuracy=0.9, test_accuracy=test_accuracy, final_loss=0.1, test_loss=0.2, epochs_run=1,
                       diverged_at_epoch=diverged, train_mode_test_accuracy=train_mode)


def _test_samples(n: int) -> Dataset:
    return Dataset("n", Split(torch.zeros(4, 1, 2, 2), torch.arange(4) % 2),
                   Split(torch.zeros(n, 1, 2, 2), torch.arange(n) % 2), 2)


def test_the_gap_must_pass_binomial_noise_and_the_margin():
    # 360 samples, p = 0.5: 1.645 * sqrt(2 * 0.25 / 360) = 0.061 < 0.1, so the margin decides
    assert eval_gap_threshold(0.45, 0.55, 360) == 0.1
    # 50 samples, p = 0.5: 1.6449 * sqrt(0.01) = 0.16449 > 0.1, so the noise does
    assert eval_gap_threshold(0.4, 0.6, 50) == pytest.approx(0.16449, abs=1e-5)
    assert eval_gap_threshold(1.0, 1.0, 50) == 0.1  # no noise at all: the margin still holds
    data360, data50 = _test_samples(360), _test_samples(50)
    assert eval_below_train(_numbers(0.5, 0.61), data360) is not None
    assert eval_below_train(_numbers(0.5, 0.6), data360) is None  # a gap of 0.1 is not more than 0.1
    assert eval_below_train(_numbers(0.42, 0.58), data50) is None  # 0.16 is within noise on 50 samples
    message = eval_below_train(_numbers(0.4, 0.6), data360)
    assert "0.4 in eval mode, 0.6 with BatchNorm on batch statistics" in message
    assert "recalibrate_bn=True" in message and "--recalibrate-bn" not in message  # spelled for Python
    with command_line_in_use():
        assert "--recalibrate-bn" in eval_below_train(_numbers(0.4, 0.6), data360)
    assert eval_below_train(_numbers(0.1, 0.9, diverged=2), data360) is None
    assert eval_below_train(_numbers(0.1, None), data360) is None  # no BatchNorm, or not measured


def test_old_results_load_without_the_new_fields(tmp_path):
    run = RunResult(variant="bn", seed=0, train_accuracy=0.9, test_accuracy=0.8, final_loss=0.1)
    data = Results(model="m", dataset="d", config={}, runs=[run]).to_dict()
    del data["runs"][0]["train_mode_test_accuracy"], data["runs"][0]["recalibrated_bn"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    loaded = Results.load(tmp_path).runs[0]
    assert loaded.train_mode_test_accuracy is None and loaded.recalibrated_bn is False


def test_the_fused_path_measures_and_recalibrates_each_run_as_the_plain_path_does(digits, tmp_path):
    train = Split(digits.train.x[:640], digits.train.y[:640])  # vmapped steps are slow on a CPU
    runs = [FusedRun(_lagging_model(seed), seed, tmp_path / f"{seed}.pt") for seed in (0, 1)]
    fused = train_fused(runs, train, digits.test, config=LAGGING, device="cpu", recalibrate_bn=True)
    saved = [load_train_state(tmp_path / f"{seed}.pt") for seed in (0, 1)]
    for result, state in zip(fused, saved, strict=True):
        assert result.recalibrated_bn and state["recalibrated_bn"] is True  # the checkpoint has the new statistics
        assert run_flags(result, digits) == [] and abs(result.test_accuracy - result.train_mode_test_accuracy) < 0.05
    assert not torch.allclose(saved[0]["model"]["1.running_mean"], saved[1]["model"]["1.running_mean"], atol=1e-3)
    # the plain path, given run 1's finished checkpoint, recalibrates its weights to the same statistics (up
    # to rounding: it runs the convolutions channels-last, the fused modules in their own layout)
    model = _lagging_model(1)
    plain = train_model(model, train, digits.test, config=LAGGING, device="cpu", seed=1,
                        checkpoint=tmp_path / "1.pt", resume=True, recalibrate_bn=True)
    assert torch.allclose(model[1].running_mean, saved[1]["model"]["1.running_mean"], atol=1e-5)
    one = 1 / len(digits.test)
    assert plain.test_accuracy == pytest.approx(fused[1].test_accuracy, abs=one)
    assert plain.train_mode_test_accuracy == pytest.approx(fused[1].train_mode_test_accuracy, abs=one)


def test_a_recalibrated_checkpoint_resumes_only_recalibrated(digits, tmp_path):
    path = tmp_path / "run.pt"
    first = train_model(_lagging_model(), digits.train, digits.test, config=LAGGING, device="cpu", checkpoint=path,
                        recalibrate_bn=True)
    again = train_model(_lagging_model(), digits.train, digits.test, config=LAGGING, device="cpu", checkpoint=path,
                        resume=True, recalibrate_bn=True)
    assert again.test_accuracy == first.test_accuracy and again.recalibrated_bn
    with pytest.raises(BnprobeError, match="recomputed after training"):
        train_model(_lagging_model(), digits.train, digits.test, config=LAGGING, device="cpu", checkpoint=path,
                    resume=True)


STUDY = ["cnn4", "--variants", "bn,identity", "--dataset", "tiny-study", "--epochs", "1", "--samples", "16",
         "--batch-size", "32", "--device", "cpu", "--probes", "sparsity", "--quiet", "--probe-workers", "0"]


def test_a_study_records_the_setting_per_run_and_keeps_it_on_resume(tmp_path):
    out = tmp_path / "study"
    result = run_cli("run", *STUDY, "--recalibrate-bn", "--out", out)
    assert result.exit_code == 0, result.output
    assert "BatchNorm statistics recomputed after training in 1/1 runs" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["recalibrate_bn"] is True
    assert [(r["variant"], r["recalibrated_bn"], r["train_mode_test_accuracy"] is None) for r in saved["runs"]] == \
        [("bn", True, False), ("identity", False, True)]
    bn = load_train_state(checkpoint_path(out, "bn", 0))
    assert bn["recalibrated_bn"] is True  # bnprobe probe and a resumed study's reference read these statistics
    assert_one_line_error(run_cli("run", *STUDY, "--resume", "--out", out),
                          "recalibrate_bn is True there and False now")
    assert run_cli("run", *STUDY, "--recalibrate-bn", "--resume", "--out", out).exit_code == 0


def test_a_study_saved_before_the_setting_resumes_without_it(tmp_path):
    config = StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn", "identity"], samples=16,
                         probes=["sparsity"], device="cpu", probe_workers=0, train={"epochs": 1, "batch_size": 32})
    run_study(config, out=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    del saved["config"]["recalibrate_bn"]
    (tmp_path / "results.json").write_text(json.dumps(saved))
    run_study(config, out=tmp_path, resume=True)  # not recalibrated then, not now: the same study
    with pytest.raises(BnprobeError, match="recalibrate_bn is False there and True now"):
        run_study(replace(config, recalibrate_bn=True), out=tmp_path, resume=True)


def test_probe_gives_an_older_study_its_batch_statistics_accuracy_and_flags(tmp_path):
    out = tmp_path / "study"
    assert run_cli("run", *STUDY, "--out", out).exit_code == 0
    path = out / "results.json"
    measured = json.loads(path.read_text())
    older = json.loads(path.read_text())
    for run in older["runs"]:
        run.pop("train_mode_test_accuracy")
        run["flags"] = []
    path.write_text(json.dumps(older))
    reprobe_study(out, ["sparsity"], device="cpu", probe_workers=0)
    again = json.loads(path.read_text())
    for before, after in zip(measured["runs"], again["runs"], strict=True):
        assert after["train_mode_test_accuracy"] == before["train_mode_test_accuracy"]
        assert after["flags"] == before["flags"]
    assert again["runs"][0]["train_mode_test_accuracy"] is not None


def test_the_preset_states_its_choice_and_the_options_change_it(monkeypatch):
    assert build_study("potgieter2025", "mnist").config.recalibrate_bn is False
    changed = build_study("potgieter2025", "cifar10", changes=Changes(study={"recalibrate_bn": True}))
    assert changed.config.recalibrate_bn is True
    import bnprobe.reproduce._presets as reproduce_cli

    studies = []

    def capture(study, **_kwargs):
        studies.append(study)
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_cli, "reproduce", capture)
    for given, wanted in ((["--recalibrate-bn"], True), ([], False)):
        result = run_cli("reproduce", "potgieter2025", "--dataset", "mnist", "--quick", *given)
        assert studies.pop().config.recalibrate_bn is wanted
        assert ("BatchNorm statistics recomputed" in result.output) is wanted
