"""run_study(out=...) and reprobe_study write the whole output folder, as the CLI's study does."""

import csv

import torch

from bnprobe.data import Dataset, Split
from bnprobe.report import Results
from bnprobe.study import StudyConfig, reprobe_study, run_study
from bnprobe.train import TrainConfig


def _blobs() -> Dataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


def _config(**kwargs) -> StudyConfig:
    return StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=16, probes=["sparsity"],
                       device="cpu", train=TrainConfig(epochs=1, batch_size=32), **kwargs)


def _csv_probes(path) -> set[str]:
    with open(path, newline="") as f:
        return {row["probe"] for row in csv.DictReader(f)}


def test_a_study_run_from_python_writes_what_the_cli_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    results = run_study(_config(), out=out, dataset=_blobs())
    assert Results.load(out).to_dict() == results.to_dict()
    for name in ("results.json", "results.csv", "history.csv", "plots/accuracy.png", "plots/sparsity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "sparsity" in _csv_probes(out / "results.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]  # nothing beside the folder


def test_without_out_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = run_study(_config(checkpoints="none"), dataset=_blobs())
    assert {r.variant for r in results.runs} == {"bn", "identity"}
    assert list(tmp_path.iterdir()) == []


def test_reprobe_writes_the_files_again_and_save_to_leaves_them(tmp_path):
    out = tmp_path / "study"
    run_study(_config(), out=out, dataset=_blobs())
    assert not (out / "plots" / "hdbscan.png").exists()
    elsewhere = tmp_path / "elsewhere"
    reprobe_study(out, ["hdbscan"], dataset=_blobs(), device="cpu", save_to=elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["results.json"]
    assert "hdbscan" not in _csv_probes(out / "results.csv")
    reprobe_study(out, ["hdbscan"], dataset=_blobs(), device="cpu")
    assert "hdbscan" in _csv_probes(out / "results.csv")
    assert (out / "plots" / "hdbscan.png").is_file()
