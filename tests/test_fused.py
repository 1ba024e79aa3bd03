"""Fused training: K seeds in one vmapped step give each run the weights it gets alone.

Tolerance.  Fusion changes no arithmetic that matters, only its order: vmap runs the K runs'
convolutions as one grouped convolution and their linear layers as one batched matrix product, whose
kernels add the same products in another order, so a weight can differ from the run alone in its last
bits after a step (about 1e-7 for float32 values of order 1).  SGD carries such differences along
linearly: after two epochs they stay below 1e-5.  Adam and AdamW divide each update by the root of the
running squared gradient, which turns a rounding difference in a near-zero gradient into a visible
one (up to about lr per step), so there the check is looser (1e-3 with lr 1e-2).  Everything discrete
-- the data order, the augmentation draws, accuracy counts -- is identical.
"""

import pytest
import torch
from torch import nn

from bnprobe.data import Augment, Dataset, Split
from bnprobe.models import create_model
from bnprobe.study import StudyConfig, StudyListener, run_study
from bnprobe.train import (
    FusedRun,
    FusionUnavailable,
    TrainConfig,
    checkpoint_path,
    fusion_blocker,
    load_train_state,
    train_fused,
    train_model,
)

SEEDS = (0, 1, 2)
AUGMENT = Augment(pad=1, flip=True)


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(n, 1, 8, 8, generator=g)
    return Split(x[:64], y[:64]), Split(x[64:], y[64:])


def _cnn(seed):
    torch.manual_seed(seed)
    return create_model("cnn4", num_classes=4, in_chans=1, width=8)


def _max_difference(a: nn.Module, b: nn.Module) -> float:
    return max(float((x.double() - y.double()).abs().max())
               for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(("config", "augment", "tolerance"), [
    (TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.05, schedule="onecycle", label_smoothing=0.1,
                 grad_clip=0.5), AUGMENT, 1e-5),
    (TrainConfig(epochs=2, batch_size=24, optimizer="adamw", lr=1e-2), AUGMENT, 1e-3),
    # Without augmentation the K batches are one gather from the stacked permutations.
    (TrainConfig(epochs=2, batch_size=24, optimizer="sgd", lr=0.05), None, 1e-5),
], ids=["sgd-onecycle-clip", "adamw-cosine-last-batch-short", "sgd-no-augment-stacked-gather"])
def test_fused_runs_get_the_weights_they_get_alone(tmp_path, config, augment, tolerance):
    train, test = _data()
    alone = {seed: _cnn(seed) for seed in SEEDS}
    expected = {seed: train_model(alone[seed], train, test, config=config, device="cpu", seed=seed, augment=augment,
                                  checkpoint=tmp_path / f"alone{seed}.pt") for seed in SEEDS}
    fused = {seed: _cnn(seed) for seed in SEEDS}
    results = train_fused([FusedRun(fused[s], s, tmp_path / f"fused{s}.pt") for s in SEEDS], train, test,
                          config=config, device="cpu", augment=augment)
    for seed, result in zip(SEEDS, results, strict=True):
        assert _max_difference(alone[seed], fused[seed]) < tolerance
        assert torch.equal(alone[seed].features[1].num_batches_tracked, fused[seed].features[1].num_batches_tracked)
        assert [r["accuracy"] for r in result.history] == [r["accuracy"] for r in expected[seed].history]
        assert result.history[-1]["loss"] == pytest.approx(expected[seed].history[-1]["loss"], rel=1e-4)
        assert result.test_accuracy == expected[seed].test_accuracy
    assert _max_difference(fused[0], fused[1]) > 0.01  # the runs did stay apart


def test_each_fused_run_keeps_its_own_data_order_and_checkpoint(tmp_path):
    """The generators a fused run saves are bit-identical to the run alone: same batches, same crops."""
    train, _ = _data()
    config = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.05)
    for seed in SEEDS:
        train_model(_cnn(seed), train, config=config, device="cpu", seed=seed, augment=AUGMENT,
                    checkpoint=tmp_path / f"alone{seed}.pt")
    train_fused([FusedRun(_cnn(s), s, tmp_path / f"fused{s}.pt") for s in SEEDS], train, config=config,
                device="cpu", augment=AUGMENT)
    orders = []
    for seed in SEEDS:
        alone, fused = (load_train_state(tmp_path / f"{kind}{seed}.pt") for kind in ("alone", "fused"))
        assert set(alone) == set(fused) and fused["epoch"] == 2 and fused["config"] == alone["config"]
        for stream in ("order", "augment", "torch"):
            assert torch.equal(alone["rng"][0][stream], fused["rng"][0][stream])
        assert alone["schedule"] == fused["schedule"]
        assert alone["optimizer"]["param_groups"] == fused["optimizer"]["param_groups"]
        for key, entry in alone["optimizer"]["state"].items():
            assert torch.allclose(entry["momentum_buffer"], fused["optimizer"]["state"][key]["momentum_buffer"],
                                  atol=1e-5)
        orders.append(fused["rng"][0]["order"])
        # A run's own state, not a view into the stacked one: its file is the size of the run alone's.
        assert (tmp_path / f"fused{seed}.pt").stat().st_size < 1.1 * (tmp_path / f"alone{seed}.pt").stat().st_size
    assert not torch.equal(orders[0], orders[1])


def test_a_fused_checkpoint_resumes_alone(tmp_path):
    """Stop a fused group after epoch 1; each run then finishes alone as if it had never been fused."""
    train, _ = _data()
    config = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.05)

    def stop(epoch, _metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_fused([FusedRun(_cnn(0), 0, tmp_path / "a.pt"), FusedRun(_cnn(1), 1, tmp_path / "b.pt", stop)],
                    train, config=config, device="cpu", augment=AUGMENT)
    resumed, whole = _cnn(0), _cnn(0)
    train_model(resumed, train, config=config, device="cpu", seed=0, augment=AUGMENT, checkpoint=tmp_path / "a.pt",
                resume=True)
    train_model(whole, train, config=config, device="cpu", seed=0, augment=AUGMENT)
    assert _max_difference(resumed, whole) < 1e-5


def test_unfusable_runs_are_refused_with_the_reason():
    train, _ = _data()
    cpu = torch.device("cpu")
    assert fusion_blocker(TrainConfig(agc=0.01), train, cpu, 2) == "adaptive gradient clipping (agc) is not fused"
    assert fusion_blocker(TrainConfig(), train, cpu, 1) == "a single run: nothing to fuse"
    assert "DataLoader" in fusion_blocker(TrainConfig(), [(train.x, train.y)], cpu, 2)
    assert "fp16" in fusion_blocker(TrainConfig(precision="fp16"), train, cpu, 2)
    assert fusion_blocker(TrainConfig(grad_clip=1.0), train, cpu, 2) is None

    def dropout_net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 4))

    models = [dropout_net(0), dropout_net(1)]
    before = [m.state_dict()["2.running_mean"].clone() for m in models]
    with pytest.raises(FusionUnavailable, match="does not run under vmap"):
        train_fused([FusedRun(m, s) for s, m in enumerate(models)], train, config=TrainConfig(epochs=1),
                    device="cpu")
    assert all(torch.equal(b, m.state_dict()["2.running_mean"]) for b, m in zip(before, models, strict=True))


class _Unbatched(nn.Module):
    def forward(self, x):
        raise NotImplementedError  # an operation without a batching rule, and no message


def test_an_error_without_a_message_still_says_why_fusion_is_off():
    train, _ = _data()
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(64, 4), _Unbatched()) for _ in range(2)]
    with pytest.raises(FusionUnavailable, match=r"^the model does not run under vmap \(NotImplementedError\)$"):
        train_fused([FusedRun(m, s) for s, m in enumerate(nets)], train, config=TrainConfig(epochs=1), device="cpu")


class _Paths(StudyListener):
    def __init__(self):
        self.planned = {}

    def training_planned(self, variant, seeds, reason):
        self.planned[variant] = (seeds, reason)


def _study(fuse, **train):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    dataset = Dataset("tiny", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4, augment=Augment(pad=1))
    return StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=2, samples=16, probes=["sparsity"],
                       device="cpu", fuse=fuse, train=TrainConfig(epochs=2, batch_size=32, **train)), dataset


def test_a_fused_study_gives_the_numbers_of_a_sequential_one(tmp_path):
    config, dataset = _study(fuse=True, optimizer="sgd", lr=0.05)
    listener = _Paths()
    fused = run_study(config, dataset=dataset, out=tmp_path / "fused", listener=listener)
    assert listener.planned == {"bn": ([0, 1], None), "identity": ([0, 1], None)}
    config, dataset = _study(fuse=False, optimizer="sgd", lr=0.05)
    listener = _Paths()
    plain = run_study(config, dataset=dataset, out=tmp_path / "plain", listener=listener)
    assert listener.planned["bn"] == ([0, 1], "fusion is off")
    for a, b in zip(fused.runs, plain.runs, strict=True):
        assert (a.variant, a.seed) == (b.variant, b.seed)
        assert a.test_accuracy == b.test_accuracy and a.train_accuracy == b.train_accuracy
        assert a.final_loss == pytest.approx(b.final_loss, rel=1e-4)
        for layer, metrics in b.probes["sparsity"].items():
            for name, value in metrics.items():
                assert a.probes["sparsity"][layer][name] == pytest.approx(value, rel=1e-3, abs=1e-4)
        for out in ("fused", "plain"):
            assert load_train_state(checkpoint_path(tmp_path / out, a.variant, a.seed))["epoch"] == 2


def test_a_study_says_why_a_variant_trains_one_run_at_a_time():
    config, dataset = _study(fuse=True, agc=0.05)
    listener = _Paths()
    run_study(config, dataset=dataset, listener=listener)
    assert listener.planned["identity"] == ([0, 1], "adaptive gradient clipping (agc) is not fused")
