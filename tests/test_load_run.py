"""load_run: one finished run's trained model, as a plain nn.Module for the user's own tools."""

import pytest
import torch
from torch import nn

import bnprobe
from bnprobe.data import Dataset, Split
from bnprobe.errors import BnprobeError
from bnprobe.study import StudyConfig, run_study
from bnprobe.surgery import IdentityNorm
from bnprobe.train import TrainConfig


def _blobs() -> Dataset:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=2, samples=16, probes=["sparsity"],
                         device="cpu", train=TrainConfig(epochs=2, batch_size=32))
    return out, run_study(config, out=out, dataset=_blobs())


def _accuracy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        return (model(split.x).argmax(1) == split.y).float().mean().item()


@pytest.mark.parametrize(("variant", "seed"), [("bn", 0), ("identity", 1)])
def test_the_loaded_model_is_the_trained_run(study, variant, seed):
    out, results = study
    model = bnprobe.load_run(out, variant, seed, dataset=_blobs())
    assert isinstance(model, nn.Module) and not model.training
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (variant == "bn")
    assert any(isinstance(m, IdentityNorm) for m in model.modules()) == (variant == "identity")
    run = next(r for r in results.runs if (r.variant, r.seed) == (variant, seed))
    assert _accuracy(model, _blobs().test) == pytest.approx(run.test_accuracy, abs=1e-6)


def test_the_two_seeds_are_different_models(study):
    out, _ = study
    a, b = (bnprobe.load_run(out, "identity", seed, dataset=_blobs()) for seed in (0, 1))
    assert not torch.equal(next(a.parameters()), next(b.parameters()))


def test_a_run_the_study_does_not_have_is_named_with_the_ones_it_has(study):
    out, _ = study
    with pytest.raises(BnprobeError, match="no finished run groupnorm seed 0; its runs: bn seed 0, identity seed 0, "
                                           "bn seed 1, identity seed 1"):
        bnprobe.load_run(out, "groupnorm", 0, dataset=_blobs())


def test_a_custom_dataset_must_be_given_again(study):
    out, _ = study
    message = r"custom dataset; load it from Python with load_run\(\.\.\., dataset=\.\.\.\)"
    with pytest.raises(BnprobeError, match=message):
        bnprobe.load_run(out, "bn", 0)


def test_a_study_without_checkpoints_has_no_runs_to_load(tmp_path):
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=16, probes=["sparsity"],
                         device="cpu", checkpoints="none", train=TrainConfig(epochs=1, batch_size=32))
    run_study(config, out=tmp_path, dataset=_blobs())
    with pytest.raises(BnprobeError, match="kept no checkpoints .* no weights to load"):
        bnprobe.load_run(tmp_path, "bn", 0, dataset=_blobs())
