import pytest
import torch
from torch import nn

from bnprobe.data import Split
from bnprobe.errors import BnprobeError
from bnprobe.train import TrainConfig, evaluate, resolve_device, train_model


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


def _blobs():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 64, generator=g) * 3
    x = centres[y] + torch.randn(200, 64, generator=g)
    return Split(x[:160].reshape(160, 1, 8, 8), y[:160]), Split(x[160:].reshape(40, 1, 8, 8), y[160:])


def test_training_learns_separable_data():
    train, test = _blobs()
    model = _model()
    before = evaluate(model, test, device=torch.device("cpu"))[1]
    result = train_model(model, train, test, config=TrainConfig(epochs=5, batch_size=32, lr=1e-2), device="cpu")
    assert result.test_accuracy > max(0.9, before)
    assert result.epochs_run == 5 and len(result.history) == 5 and result.diverged_at_epoch is None
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_seed_gives_bit_identical_weights():
    train, test = _blobs()
    a, b = _model(), _model()
    cfg = TrainConfig(epochs=2, batch_size=16)
    train_model(a, train, config=cfg, device="cpu", seed=3)
    train_model(b, train, config=cfg, device="cpu", seed=3)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_divergence_is_recorded():
    train, _ = _blobs()
    result = train_model(_model(), train, config=TrainConfig(epochs=3, lr=1e12, optimizer="sgd",
                                                             weight_decay=0.0), device="cpu")
    assert result.diverged_at_epoch is not None and result.epochs_run == result.diverged_at_epoch < 3


def test_dataloader_path():
    train, test = _blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train.x, train.y), batch_size=32)
    result = train_model(_model(), loader, test, config=TrainConfig(epochs=3, lr=1e-2), device="cpu")
    assert result.test_accuracy > 0.9


def test_config_validation():
    with pytest.raises(BnprobeError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")
    with pytest.raises(BnprobeError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BnprobeError, match="no CUDA GPU"):
            resolve_device("cuda")
