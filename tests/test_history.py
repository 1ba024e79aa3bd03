"""Per-epoch history (loss, train-mode accuracy, test accuracy, lr) in results.json and history.csv,
and the at-chance flag."""

import csv
import io
import json
import math

import pytest
import torch
from torch import nn

import bnprobe.train._loop as train_module
from bnprobe.data import Dataset, Split
from bnprobe.report import summary_json, write_outputs
from bnprobe.report._results import HISTORY_COLUMNS, Results, RunResult, finite_history
from bnprobe.train import FusedRun, TrainConfig, TrainResult, train_fused, train_model
from bnprobe.train._flags import CHECKS, at_chance, chance_threshold, run_flags


def _data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


def _counting_evaluate(monkeypatch) -> list:
    calls = []
    real = train_module.evaluate

    def counted(model, data, **kwargs):
        calls.append((len(data), kwargs.get("batch_stats", False)))
        return real(model, data, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", counted)
    return calls


@pytest.mark.parametrize("epochs", [1, 3])
def test_every_epoch_has_its_test_accuracy_and_the_last_reuses_the_final_evaluation(monkeypatch, epochs):
    data = _data()
    calls = _counting_evaluate(monkeypatch)
    config = TrainConfig(epochs=epochs, batch_size=16, schedule="constant", lr=0.01)
    result = train_model(_model(), data.train, data.test, config=config, device="cpu")
    # one test pass per epoch but the last, then train and test, and test with batch statistics (BatchNorm)
    assert calls == [(32, False)] * (epochs - 1) + [(64, False), (32, False), (32, True)]
    assert [r["epoch"] for r in result.history] == list(range(1, epochs + 1))
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in result.history)
    assert result.history[-1]["test_accuracy"] == result.test_accuracy
    assert all(r["lr"] == 0.01 for r in result.history)  # constant schedule


def test_the_recorded_lr_follows_the_schedule():
    data = _data()
    config = TrainConfig(epochs=3, batch_size=16, schedule="cosine", lr=0.01)
    result = train_model(_model(), data.train, data.test, config=config, device="cpu")
    lrs = [r["lr"] for r in result.history]
    # 4 steps an epoch, 12 in all: the last step of epoch e used the lr after 4e - 1 schedule steps
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * (4 * e - 1) / 12)) / 2 for e in (1, 2, 3)])


def test_without_a_test_split_the_history_has_no_test_accuracy():
    data = _data()
    result = train_model(_model(), data.train, config=TrainConfig(epochs=2, batch_size=32), device="cpu")
    assert [r["test_accuracy"] for r in result.history] == [None, None]


def test_fused_runs_keep_the_same_history_as_alone():
    data = _data()
    config = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.05)
    alone = [train_model(_model(seed), data.train, data.test, config=config, device="cpu", seed=seed)
             for seed in (0, 1)]
    fused = train_fused([FusedRun(_model(seed), seed) for seed in (0, 1)], data.train, data.test, config=config,
                        device="cpu")
    for a, f in zip(alone, fused, strict=True):
        assert [r["test_accuracy"] for r in f.history] == [r["test_accuracy"] for r in a.history]
        assert [r["lr"] for r in f.history] == pytest.approx([r["lr"] for r in a.history])
        assert f.history[-1]["test_accuracy"] == f.test_accuracy and f.fused_runs == 2


def _results() -> Results:
    history = [{"epoch": 1, "loss": 1.5, "accuracy": 0.25, "test_accuracy": 0.5, "lr": 0.01},
               {"epoch": 2, "loss": float("nan"), "accuracy": 0.5, "test_accuracy": None, "lr": 0.005}]
    run = RunResult(variant="bn", seed=0, train_accuracy=0.5, test_accuracy=None, final_loss=None, epochs_run=2,
                    diverged_at_epoch=2, history=finite_history(history),
                    flags=[{"name": "at_chance", "message": "not above chance"}])
    return Results(model="m", dataset="d", config={}, runs=[run], layers=[])


def test_history_and_flags_go_into_results_json_and_history_csv(tmp_path):
    results = _results()
    results.save(tmp_path)
    loaded = Results.load(tmp_path)
    assert loaded.runs[0].history[1]["loss"] is None  # the diverged epoch's NaN, as JSON can hold it
    assert loaded.runs[0].history[0] == {"epoch": 1, "loss": 1.5, "accuracy": 0.25, "test_accuracy": 0.5, "lr": 0.01}
    assert loaded.runs[0].flags == [{"name": "at_chance", "message": "not above chance"}]
    write_outputs(loaded, tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "history.csv").read_text())))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert rows[1:5] == [["bn", "0", "1", "loss", "1.5"], ["bn", "0", "1", "accuracy", "0.25"],
                         ["bn", "0", "1", "test_accuracy", "0.5"], ["bn", "0", "1", "lr", "0.01"]]
    assert ["bn", "0", "2", "loss", ""] in rows and len(rows) == 9
    assert summary_json(loaded)["flags"] == [{"variant": "bn", "seed": 0, "name": "at_chance",
                                              "message": "not above chance"}]


def test_results_without_history_or_flags_still_load(tmp_path):
    data = _results().to_dict()
    for run in data["runs"]:
        del run["history"], run["flags"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    run = Results.load(tmp_path).runs[0]
    assert run.history == [] and run.flags == []


def test_chance_threshold_is_the_binomial_quantile():
    # Binomial(10, 1/2): P(X <= 7) = 0.945, P(X <= 8) = 0.989, so guessing stays at or under 8/10.
    assert chance_threshold(2, 10) == 0.8
    # Binomial(4, 1/4): P(X <= 2) = 0.949, P(X <= 3) = 0.996.
    assert chance_threshold(4, 4) == 0.75


def _trained(test_accuracy, diverged=None) -> TrainResult:
    return TrainResult(train_accuracy=0.9, test_accuracy=test_accuracy, final_loss=0.1, test_loss=0.2, epochs_run=1,
                       diverged_at_epoch=diverged)


def test_a_run_at_chance_is_flagged_and_one_above_is_not():
    data = Dataset("ten", Split(torch.zeros(4, 1, 2, 2), torch.arange(4) % 2),
                   Split(torch.zeros(10, 1, 2, 2), torch.arange(10) % 2), 2)
    flags = run_flags(_trained(0.8), data)
    assert [f["name"] for f in flags] == ["at_chance"] and "0.8" in flags[0]["message"]
    assert run_flags(_trained(0.9), data) == []
    assert at_chance(_trained(0.5, diverged=1), data) is None  # the report says it diverged
    assert at_chance(_trained(None), data) is None
    assert set(CHECKS) == {"at_chance", "eval_below_train"}
