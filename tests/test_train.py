import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bnprobe.cli import cli
from bnprobe.cli.run import per_variant, train_settings
from bnprobe.data import Augment, Dataset, Split
from bnprobe.errors import BnprobeError
from bnprobe.study import StudyConfig, run_study
from bnprobe.train._loop import (
    TrainConfig,
    adaptive_clip_,
    classifier_parameters,
    evaluate,
    global_rng_state,
    resolve_device,
    set_global_rng_state,
    train_model,
)


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


def test_augmentation_is_part_of_what_a_seed_fixes():
    train, _ = _blobs()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    flip_crop = Augment(pad=1, flip=True)
    a, b, c, plain = _model(), _model(), _model(), _model()
    for model, seed, augment in ((a, 3, flip_crop), (b, 3, flip_crop), (c, 4, flip_crop), (plain, 3, None)):
        train_model(model, train, config=cfg, device="cpu", seed=seed, augment=augment)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[1].weight, c[1].weight)  # another seed: other order and other crops
    assert not torch.equal(a[1].weight, plain[1].weight)  # the augmentation did change the batches


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
    with pytest.raises(BnprobeError, match="precision must be one of auto, fp32, bf16, fp16; got 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(BnprobeError, match="agc must be > 0, got -1.0"):
        TrainConfig(agc=-1.0)
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BnprobeError, match=r"here \(no CUDA device is visible\); torch can use: auto, cpu"):
            resolve_device("cuda")


def test_adaptive_clipping_by_hand():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [1e-4, 0.0]]))  # unit norms 5 and 1e-4 (floored to 1e-3)
        layer.bias.copy_(torch.tensor([1.0, 0.0]))  # a bias is one unit: norm 1
    layer.weight.grad = torch.tensor([[6.0, 8.0], [0.0, 5e-5]])
    layer.bias.grad = torch.tensor([0.3, 0.4])
    adaptive_clip_(layer.parameters(), clip=0.1)
    # row 0: |g| = 10 > 0.1 * 5 -> scaled to norm 0.5; row 1: |g| = 5e-5 <= 0.1 * 1e-3 -> kept
    assert torch.allclose(layer.weight.grad, torch.tensor([[0.3, 0.4], [0.0, 5e-5]]))
    assert torch.allclose(layer.bias.grad, torch.tensor([0.06, 0.08]))  # |g| = 0.5 > 0.1 -> 0.1
    conv = nn.Conv2d(1, 2, 2, bias=False)  # a unit is an output channel: norm over (in, kh, kw)
    with torch.no_grad():
        conv.weight.copy_(torch.ones(2, 1, 2, 2))  # unit norms 2
    conv.weight.grad = torch.full((2, 1, 2, 2), 0.5).mul(torch.tensor([1.0, 0.01]).view(2, 1, 1, 1))
    adaptive_clip_([conv.weight], clip=0.1)  # channel 0: |g| = 1 > 0.2 -> 0.2; channel 1: |g| = 0.01 kept
    assert torch.allclose(conv.weight.grad[:, 0, 0, 0], torch.tensor([0.1, 0.005]))


def test_agc_spares_the_classifier_and_trains():
    model = _model()
    assert classifier_parameters(model) == list(model[4].parameters())
    import timm

    resnet = timm.create_model("resnet10t", num_classes=3)
    assert classifier_parameters(resnet) == list(resnet.fc.parameters())
    train, test = _blobs()
    config = TrainConfig(epochs=4, batch_size=32, lr=1e-2, agc=0.05, grad_clip=5.0)
    assert train_model(model, train, test, config=config, device="cpu").test_accuracy > 0.9


def _tiny_dataset(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(n, 1, 8, 8, generator=g)
    return Dataset("tiny", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4, augment=Augment(pad=1))


def test_variants_of_a_seed_start_from_the_same_weights(monkeypatch):
    import bnprobe.study._run as study

    seen = {}

    def record(model, *args, seed, **kwargs):
        weights = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() > 1}
        seen[(kwargs["checkpoint"], seed, len(seen))] = weights
        return train_model(model, *args, seed=seed, **kwargs)

    monkeypatch.setattr(study, "train_model", record)
    config = StudyConfig(model="cnn4", variants=["bn", "identity", "groupnorm"], seeds=2, samples=8,
                         probes=["sparsity"], device="cpu", train=TrainConfig(epochs=1, batch_size=32))
    run_study(config, dataset=_tiny_dataset())
    by_seed = [[w for (_, seed, _), w in seen.items() if seed == s] for s in (0, 1)]
    assert [len(runs) for runs in by_seed] == [3, 3]
    for runs in by_seed:
        assert len(runs[0]) == 5  # four convs and the classifier
        for other in runs[1:]:
            assert all(torch.equal(runs[0][k], other[k]) for k in runs[0])
    assert not torch.equal(by_seed[0][0]["features.0.weight"], by_seed[1][0]["features.0.weight"])


def test_per_variant_settings():
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], probes=["sparsity"],
                         train=TrainConfig(lr=0.01), overrides={"bn": {"lr": 0.1, "agc": None}})
    assert config.train_for("bn").lr == 0.1 and config.train_for("identity").lr == 0.01
    with pytest.raises(BnprobeError, match="lr set for variant 'groupnorm', which is not in variants"):
        StudyConfig(model="cnn4", variants=["bn"], probes=["sparsity"], overrides={"groupnorm": {"lr": 0.1}})
    with pytest.raises(BnprobeError, match="epochs cannot differ between variants"):
        StudyConfig(model="cnn4", variants=["bn"], probes=["sparsity"], overrides={"bn": {"epochs": 2}})
    with pytest.raises(BnprobeError, match="lr must be > 0, got -1.0"):
        StudyConfig(model="cnn4", variants=["bn"], probes=["sparsity"], overrides={"bn": {"lr": -1.0}})


def test_per_variant_option_syntax():
    assert per_variant("--lr", "0.02", 1e-3) == (0.02, {})
    assert per_variant("--lr", "bn=0.1, identity=0.02", 1e-3) == (1e-3, {"bn": 0.1, "identity": 0.02})
    assert per_variant("--grad-clip", "1,groupnorm:8=none", None) == (1.0, {"groupnorm:8": None})
    variants = ["bn", "identity", "groupnorm"]
    shared, overrides = train_settings(variants, {"lr": "0.05,bn=0.1", "agc": "0.01,identity=0.02"})
    assert shared == {"lr": 0.05, "agc": None}  # a bare --agc skips bn ...
    assert overrides == {"bn": {"lr": 0.1}, "identity": {"agc": 0.02}, "groupnorm": {"agc": 0.01}}
    assert train_settings(variants, {"agc": "0.01,bn=0.01"})[1]["bn"] == {"agc": 0.01}  # ... unless named


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "fast"], "--lr: 'fast' is not a number; give e.g. 1e-3 or bn=3e-3,identity=5e-4"),
    (["--lr", "nonorm=0.1"], "lr set for variant 'nonorm', which is not in variants (bn, identity)"),
    (["--agc", "-1"], "agc must be > 0, got -1.0"),
    (["--precision", "fp8"], "precision must be one of auto, fp32, bf16, fp16"),
    (["--schedule", "warm"], "schedule must be one of cosine, onecycle, constant"),
    (["--optimizer", "lion"], "optimizer must be one of sgd, adam, adamw"),
    (["--label-smoothing", "2"], "label_smoothing must be <= 1.0"),
    (["--resume"], "--resume needs --out"),
    (["--dataset", "mnist", "--data-root", "{tmp}"], "mnist: its files are in none of"),
])
def test_training_options_fail_in_one_line(args, message, monkeypatch, tmp_path):
    import torchvision

    def offline(self):
        raise OSError("offline")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["run", "cnn4", "--variants", "bn,identity", "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_the_global_rng_state_put_back_replays_the_same_draws():
    torch.manual_seed(3)
    state = global_rng_state(torch.device("cpu"))
    assert set(state) == {"torch"}  # no GPU state off CUDA
    first = torch.rand(5)
    torch.rand(7)  # moves the generator on
    set_global_rng_state({"order": torch.zeros(1), **state}, torch.device("cpu"))  # a checkpoint's extra keys
    assert torch.equal(torch.rand(5), first)
