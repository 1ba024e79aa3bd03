"""The ablation probe on models with known answers, and in a tiny study against bn."""

import math

import pytest
import torch
from torch import nn

from bnprobe.capture import capture
from bnprobe.errors import BnprobeError
from bnprobe.probes import ProbeContext, get_probe
from bnprobe.probes._ablation import half_fraction
from bnprobe.report import metric_stats, write_outputs
from bnprobe.report._files import file_stem
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig

CPU = torch.device("cpu")
CHANNELS = 8


def _one_channel_model() -> nn.Sequential:
    """Two classes, told apart by channel 0 of the ReLU alone: it is relu(x0), 1 for class 1 and 0 for
    class 0; channels 1-7 are constant (no class in them, index 0).  Class 1 iff channel 0 > 0.5: with
    channel 0 zeroed, and with every channel zeroed, the logits are the bias (0, -1): always class 0."""
    first, second = nn.Linear(2, CHANNELS), nn.Linear(CHANNELS, 2)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, 0] = 1.0
        first.bias.copy_(torch.linspace(0.5, 1.5, CHANNELS))
        first.bias[0] = 0.0
        second.weight.zero_()
        second.weight[1, 0] = 2.0
        second.bias.copy_(torch.tensor([0.0, -1.0]))
    return nn.Sequential(first, nn.ReLU(), second)


def _samples(labels: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of ``_one_channel_model``: x0 = +1 for class 1, -1 for class 0; x1 is noise, which it ignores."""
    y = torch.tensor(labels)
    x = torch.stack([2.0 * y - 1, torch.randn(len(y), generator=torch.Generator().manual_seed(seed))], dim=1)
    return x, y


def _ablate(model: nn.Module, probed, held_out, **params) -> dict[str, dict[str, float]]:
    """The probe's numbers for ``model`` captured on ``probed`` and scored on ``held_out``."""
    probe = get_probe("ablation", **params)
    captured = capture(model, probed, probes=[probe])
    context = ProbeContext(model=model, inputs=captured.inputs, labels=torch.from_numpy(captured.labels), device=CPU,
                           layer_modules=captured.modules, layers=tuple(captured.layers), held_out=held_out)
    return probe.measure(None, context)


PROBED = _samples([0, 1] * 20, seed=0)


def test_zeroing_the_channel_that_carries_the_class_first_halves_accuracy_at_once():
    held_out = _samples([0, 1] * 50, seed=1)  # balanced: class 0 always is 0.5
    r = _ablate(_one_channel_model(), PROBED, held_out, fractions=[0.125, 0.25, 0.5, 0.75], orders=20)["1"]
    assert r["channels"] == CHANNELS and r["ranked_fraction"] == 1.0
    assert r["accuracy_selective_0"] == r["accuracy_random_0"] == 1.0
    assert r["accuracy_selective_0.125"] == 0.5  # channel 0 has index 1, the others 0: it goes first
    assert [r[f"accuracy_selective_{f}"] for f in ("0.25", "0.5", "0.75", "1")] == [0.5] * 4
    # 0.125 * (1 + 0.5) / 2 + 0.875 * 0.5; it halves exactly where channel 0 goes
    assert r["auc_selective"] == pytest.approx(0.53125)
    assert r["half_fraction_selective"] == pytest.approx(0.125)
    # at random, channel 0 is among the first k of 8 with chance k / 8: accuracy 1 - k / 16 on average
    assert r["accuracy_random_0.5"] == pytest.approx(0.75, abs=0.15)
    assert r["auc_random"] > r["auc_selective"] + 0.15 and r["auc_random_std"] > 0
    assert r["half_fraction_random"] > 0.5


def test_nothing_zeroed_is_the_unablated_accuracy_and_everything_zeroed_the_constant_prediction():
    # held out: 70 % class 0, and 10 of 100 labels flipped, so that the unablated accuracy is 0.9
    x, y = _samples([0] * 70 + [1] * 30, seed=2)
    labels = y.clone()
    labels[::10] = 1 - labels[::10]
    model = _one_channel_model()
    r = _ablate(model, PROBED, (x, labels), orders=2)["1"]
    with torch.no_grad():
        unablated = float((model(x).argmax(dim=1) == labels).double().mean())
    assert unablated == pytest.approx(0.9)
    assert r["accuracy_selective_0"] == r["accuracy_random_0"] == pytest.approx(unablated)
    # every channel zeroed: the logits are the bias, always class 0 -- the majority's share, not the probed 0.5
    assert r["accuracy_selective_1"] == r["accuracy_random_1"] == pytest.approx(float((labels == 0).double().mean()))
    assert math.isnan(r["half_fraction_random"])  # 0.9 never falls to 0.45


def test_a_bounded_seeded_subset_of_the_held_out_images_is_scored_the_same_every_time():
    held_out = _samples([0, 1] * 100, seed=3)
    first = _ablate(_one_channel_model(), PROBED, held_out, images=50, orders=2)
    assert first == _ablate(_one_channel_model(), PROBED, held_out, images=50, orders=2)
    probe = get_probe("ablation", images=50)
    context = ProbeContext(model=nn.Identity(), inputs=torch.zeros(1), labels=torch.zeros(1), device=CPU,
                           held_out=held_out)
    assert probe.notes(None, context) == {
        "test_images": "accuracy on 50 of 200 held-out test images, drawn with seed 0, the same for every run"}


def test_the_model_is_left_as_it_was_even_when_a_pass_fails():
    model = _one_channel_model().train()
    x, y = _samples([0, 1] * 10, seed=4)
    with pytest.raises(RuntimeError):  # 3 input features: the first held-out pass fails, the hooks are in place
        _ablate(model, PROBED, (torch.zeros(20, 3), y))
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    _ablate(model, PROBED, (x, y), orders=1)
    assert model.training and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class _ReusedRelu(nn.Module):
    """One ReLU module called twice per forward, as torchvision's ResNet blocks do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))))


class _TwoRelus(_ReusedRelu):
    def __init__(self) -> None:
        super().__init__()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu2(self.conv2(self.relu(self.conv1(x)))))


def test_each_call_of_a_reused_module_is_ablated_on_its_own():
    torch.manual_seed(1)
    probed = (torch.randn(30, 1, 6, 6), torch.arange(30) % 3)
    held_out = (torch.randn(40, 1, 6, 6), torch.arange(40) % 3)
    reused, separate = _ReusedRelu(), _TwoRelus()
    separate.load_state_dict(reused.state_dict())
    ours = _ablate(reused, probed, held_out, orders=2)
    twin = _ablate(separate, probed, held_out, orders=2)
    assert set(ours) == {"relu#0", "relu#1"}
    assert ours["relu#0"] == pytest.approx(twin["relu"], nan_ok=True)
    assert ours["relu#1"] == pytest.approx(twin["relu2"], nan_ok=True)


def test_the_half_fraction_is_interpolated_between_the_measured_points():
    assert half_fraction([0.0, 0.5, 1.0], [0.8, 0.6, 0.2]) == pytest.approx(0.5 + 0.5 * 0.2 / 0.4)
    assert math.isnan(half_fraction([0.0, 1.0], [0.8, 0.5]))
    assert math.isnan(half_fraction([0.0, 1.0], [0.0, 0.0]))


@pytest.mark.parametrize(("params", "message"), [
    ({"fractions": 0.5}, "fractions must be a list of fractions of the channels"),
    ({"fractions": [0.5, 1.5]}, "fractions must be <= 1.0, got 1.5"),
    ({"fractions": [k / 20 for k in range(1, 20)]}, "fractions holds 21 values with 0 and 1, at most 11"),
    ({"fractions": [0.1, 0.1000001]}, "too close to name apart"),
    ({"orders": 0}, "orders must be >= 1, got 0"),
    ({"images": 0}, "images must be >= 1, got 0"),
    ({"images": 6000}, "images must be <= 5000, got 6000"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
])
def test_bad_parameters_are_refused_in_one_line(params, message):
    with pytest.raises(BnprobeError, match=message) as caught:
        get_probe("ablation", **params)
    assert "\n" not in str(caught.value)


def test_a_run_without_held_out_images_is_refused_in_one_line():
    model = _one_channel_model()
    context = ProbeContext(model=model, inputs=PROBED[0], labels=PROBED[1], device=CPU, layer_modules={"1": model[1]})
    with pytest.raises(BnprobeError, match=r"held-out test images, and the run has none; give them: run_probes\(") \
            as caught:
        get_probe("ablation").measure(None, context)
    assert "\n" not in str(caught.value)


def test_the_probe_runs_in_a_tiny_digits_study_paired_against_bn(tmp_path):
    config = StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=200,
                         probes=["ablation(fractions=[0.5],orders=2)"], device="cpu", checkpoints="none",
                         train=TrainConfig(epochs=1, batch_size=128))
    results = run_study(config)
    key = get_probe("ablation", fractions=[0.5], orders=2).key
    assert not any(run.failures for run in results.runs)
    values = {run.variant: run.probes[key] for run in results.runs}
    assert set(values["bn"]) == set(values["identity"]) == set(results.layers)
    for run in results.runs:  # 1000 images asked, the 360 of the digits test split scored: the run's test accuracy
        for numbers in run.probes[key].values():
            assert numbers["accuracy_random_0"] == pytest.approx(run.test_accuracy)
            assert 0 <= numbers["auc_random"] <= numbers["accuracy_random_0"]
    rows = [row for row in metric_stats(results, key, "auc_selective") if row.variant == "identity"]
    assert len(rows) == len(results.layers)
    for row in rows:
        expected = values["identity"][row.layer]["auc_selective"] - values["bn"][row.layer]["auc_selective"]
        assert row.difference.n == 1 and row.difference.estimate == pytest.approx(expected)
    write_outputs(results, tmp_path)  # the figure: both areas by layer, a series per variant
    plotted = (tmp_path / "plots" / f"{file_stem(key)}.csv").read_text()
    assert (tmp_path / "plots" / f"{file_stem(key)}.png").is_file()
    assert "auc_selective" in plotted and "auc_random" in plotted
    curves = (tmp_path / "plots" / f"{file_stem(key)}_curves.csv").read_text()  # and the curves, a panel per layer
    assert (tmp_path / "plots" / f"{file_stem(key)}_curves.png").is_file()
    assert "accuracy_selective_0.5" in curves and "accuracy_random_0.5" in curves and "channels" in curves
