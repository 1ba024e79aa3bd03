import math

import numpy as np
import pytest
import torch

from bnprobe.capture._layer_kinds import ACTIVATION_TYPES, FUNCTIONAL_ACTIVATION_NAMES, activation_name
from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe
from bnprobe.probes._sparsity import EXACT_ZERO_ACTIVATIONS, OFF_THRESHOLDS, SparsityProbe, zero_test_for


def _measure(acts, labels, batches=1, **params):
    probe = SparsityProbe(**params)
    acc = probe.accumulator("l", tuple(acts.shape[1:]))
    for chunk, lab in zip(acts.chunk(batches), labels.chunk(batches), strict=True):
        acc.update(chunk, lab)
    return acc.result()


def test_sparsity_by_hand():
    # 2 samples, 2 channels, 2 positions.
    acts = torch.tensor([[[0.0, 1.0], [0.0, 0.0]],
                         [[2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([0, 1])
    r = _measure(acts, labels)
    # channel 0: 2 zeros of 4; channel 1: 4 of 4 -> mean 0.75
    assert r["channel_sparsity"] == pytest.approx(0.75)
    # each sample has 3 zeros of 4
    assert r["sample_sparsity"] == pytest.approx(0.75)
    # channel 1 is dead
    assert r["dead_channel_fraction"] == pytest.approx(0.5)
    # one non-zero per sample: Hoyer 1
    assert r["hoyer"] == pytest.approx(1.0)
    assert r["class_sparsity_0"] == pytest.approx(0.75)
    assert r["class_sparsity_spread"] == pytest.approx(0.0)
    assert r["channel_sparsity_q50"] == pytest.approx(0.75)


def test_streaming_equals_one_batch_and_hoyer_formula():
    g = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(12, 3, 4, 4, generator=g))
    labels = torch.arange(12) % 3
    whole, streamed = _measure(acts, labels), _measure(acts, labels, batches=4)
    for key in whole:
        assert streamed[key] == pytest.approx(whole[key], abs=1e-6)
    flat = acts.reshape(12, -1).double()
    n = flat.shape[1]
    hoyer = ((math.sqrt(n) - flat.abs().sum(1) / flat.norm(dim=1)) / (math.sqrt(n) - 1)).mean()
    assert whole["hoyer"] == pytest.approx(float(hoyer), rel=1e-5)
    zeros = (acts == 0).numpy()
    per_class = [zeros[labels.numpy() == c].mean() for c in range(3)]
    assert whole["class_sparsity_2"] == pytest.approx(per_class[2])
    assert whole["class_sparsity_spread"] == pytest.approx(max(per_class) - min(per_class))
    per_channel = zeros.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    assert whole["channel_sparsity_q90"] == pytest.approx(np.quantile(per_channel, 0.9))


def test_eps_counts_near_zero_values():
    acts = torch.tensor([[0.005, -0.002, 0.5, 1.0]])
    labels = torch.tensor([0])
    assert _measure(acts, labels)["channel_sparsity"] == pytest.approx(0.0)
    assert _measure(acts, labels, eps=0.01)["channel_sparsity"] == pytest.approx(0.5)


def test_two_tiny_channels_of_four_are_dormant_but_not_dead():
    # 3 samples, 4 channels, 2 positions: channels 2 and 3 are on, but at 1e-3 of the others' scale.
    scale = torch.tensor([1.0, 2.0, 1e-3, 1e-3])[None, :, None]
    acts = scale * torch.tensor([[1.0, 0.0], [0.5, 1.5], [2.0, 1.0]])[:, None, :]
    labels = torch.tensor([0, 1, 0])
    whole, streamed = _measure(acts, labels), _measure(acts, labels, batches=3)
    assert whole["dead_channel_fraction"] == 0.0
    # s_c = mean |a| = 5/6 * (1, 2, 1e-3, 1e-3); over their mean: (1.33, 2.67, 0.0013, 0.0013)
    assert whole["dormant_fraction"] == 0.5 and streamed["dormant_fraction"] == 0.5
    assert _measure(acts, labels, tau=0.001)["dormant_fraction"] == 0.0  # 0.0013 > 0.001
    assert _measure(acts, labels, tau=1.5)["dormant_fraction"] == 0.75  # 1.33 <= 1.5: three of four
    assert _measure(-acts, labels)["dormant_fraction"] == 0.5  # |a|: negative values count by magnitude


def test_a_layer_of_zeros_is_wholly_dormant():
    numbers = _measure(torch.zeros(4, 3, 2), torch.tensor([0, 1, 0, 1]))
    assert numbers["dormant_fraction"] == 1.0 and numbers["dead_channel_fraction"] == 1.0


def test_bad_eps_is_one_line_error():
    with pytest.raises(BnprobeError, match="eps must be >= 0"):
        get_probe("sparsity", eps=-1)
    with pytest.raises(BnprobeError, match="unknown parameter"):
        get_probe("sparsity", threshold=1)
    with pytest.raises(BnprobeError, match="sparsity: tau must be >= 0"):
        get_probe("sparsity", tau=-0.1)


# --------------------------------------------------------------------------------------------------
# The zero test, chosen per layer from its activation

# Two samples, two channels, two positions: the inputs of a SiLU layer, and its outputs by hand:
# silu(-1) = -0.2689, silu(2) = 1.7616, silu(0) = 0, silu(-3) = -0.1423,
# silu(1) = 0.7311, silu(3) = 2.8577, silu(-0.5) = -0.1888, silu(4) = 3.9281.
SILU_INPUTS = torch.tensor([[[-1.0, 2.0], [0.0, -3.0]],
                            [[1.0, 3.0], [-0.5, 4.0]]])


def _silu_measure(**params):
    probe = SparsityProbe(**params)
    acc = probe.accumulator("act", (2, 2), activation="silu")
    acc.update(torch.nn.functional.silu(SILU_INPUTS), torch.tensor([0, 1]))
    return acc.result(), acc.test.describe()


def test_a_silu_layer_counts_the_units_in_their_non_positive_region():
    numbers, described = _silu_measure()
    assert described == "a <= 0 (silu)"
    # a <= 0 where the input is <= 0: channel 0 has -1 (1 of 4), channel 1 has 0, -3, -0.5 (3 of 4)
    assert numbers["channel_sparsity"] == pytest.approx((0.25 + 0.75) / 2)
    assert numbers["channel_sparsity_q10"] == pytest.approx(0.25 + 0.1 * 0.5)
    assert numbers["sample_sparsity"] == pytest.approx((3 / 4 + 1 / 4) / 2)  # sample 0: -1, 0, -3; sample 1: -0.5
    assert numbers["class_sparsity_0"] == pytest.approx(0.75) and numbers["class_sparsity_1"] == pytest.approx(0.25)
    assert numbers["dead_channel_fraction"] == 0.0
    # eps widens the off region: a <= 0.75 also takes silu(1) = 0.7311, channel 0 has 2 of 4
    numbers, described = _silu_measure(eps=0.75)
    assert described == "a <= 0.75 (silu)" and numbers["channel_sparsity"] == pytest.approx((0.5 + 0.75) / 2)


def test_zero_test_exact_counts_silu_zeros_as_before():
    numbers, described = _silu_measure(zero_test="exact")
    assert described == "a == 0 (silu)"
    assert numbers["channel_sparsity"] == pytest.approx((0 + 0.25) / 2)  # silu(0) is the only exact zero
    numbers, described = _silu_measure(zero_test="exact", eps=0.2)
    assert described == "|a| <= 0.2 (silu)"  # -0.1423, 0 and -0.1888, all in channel 1
    assert numbers["channel_sparsity"] == pytest.approx((0 + 0.75) / 2)
    assert SparsityProbe(zero_test="exact").key == "sparsity(zero_test='exact')"
    with pytest.raises(BnprobeError, match="zero_test must be one of auto, exact"):
        get_probe("sparsity", zero_test="relative")


def test_a_relu_layer_counts_exact_zeros_as_a_layer_of_no_activation_does():
    g = torch.Generator().manual_seed(3)
    acts = torch.relu(torch.randn(10, 3, 4, generator=g))
    labels = torch.arange(10) % 2
    for eps in (0.0, 0.3):
        relu, plain = SparsityProbe(eps=eps).accumulator("relu", (3, 4), activation="relu"), \
            SparsityProbe(eps=eps).accumulator("conv", (3, 4))
        relu.update(acts, labels)
        plain.update(acts, labels)
        assert relu.result() == plain.result()
        expected = (acts <= eps).float().mean(dim=(0, 2)).mean()
        assert relu.result()["channel_sparsity"] == pytest.approx(float(expected))
    assert relu.test.describe() == "|a| <= 0.3 (relu)" and plain.test.describe() == "|a| <= 0.3 (not an activation)"
    assert zero_test_for("relu").describe() == "a == 0 (relu)"


def _constructible_activations():
    for cls in ACTIVATION_TYPES:
        module = cls()
        yield activation_name(module), module.eval()


@pytest.mark.parametrize(("name", "module"), list(_constructible_activations()), ids=lambda v: str(v))
def test_every_activation_is_off_exactly_when_its_input_is_not_positive(name, module):
    """The zero test of each activation module holds exactly where its input is <= 0 (softplus, never
    <= 0, is counted by exact zeros, which it never has)."""
    x = torch.cat([torch.linspace(-6, -0.01, 300), torch.zeros(1), torch.linspace(0.01, 6, 300)]).reshape(1, 1, -1)
    test = zero_test_for(name)
    if name == "softplus":
        assert test.rule == "exact" and not test(module(x)).any()
        return
    assert name in EXACT_ZERO_ACTIVATIONS or name in OFF_THRESHOLDS
    assert torch.equal(test(module(x)), x <= 0)


def test_every_functional_activation_has_a_zero_test_of_its_own():
    named = set(EXACT_ZERO_ACTIVATIONS) | set(OFF_THRESHOLDS) | {"softplus"}
    assert set(FUNCTIONAL_ACTIVATION_NAMES) <= named
    assert {activation_name(cls()) for cls in ACTIVATION_TYPES} <= named


class _Mixed(torch.nn.Module):
    """A conv, an nn.SiLU, a functional F.silu and an nn.ReLU: three zero tests in one model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.act = torch.nn.SiLU()
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(torch.nn.functional.silu(self.act(self.conv(x)) - 0.1)).mean(dim=(2, 3))


def test_capture_picks_each_layers_zero_test_from_its_module_or_its_functional_call():
    import bnprobe

    torch.manual_seed(0)
    model = _Mixed()
    x, y = torch.randn(12, 1, 6, 6), torch.arange(12) % 3
    probe = SparsityProbe()
    captured = bnprobe.capture(model, (x, y), layers="act,conv", probes=[probe], batch_size=5)
    assert {layer.name: layer.activation for layer in captured.layers} == {
        "conv": None, "act": "silu", ":silu": "silu", "relu": "relu"}
    outcome = bnprobe.run_probes(captured, [probe])
    assert outcome.notes["sparsity"] == {"conv": {"zero_test": "a == 0 (not an activation)"},
                                         "act": {"zero_test": "a <= 0 (silu)"},
                                         ":silu": {"zero_test": "a <= 0 (silu)"},
                                         "relu": {"zero_test": "a == 0 (relu)"}}
    with torch.no_grad():
        conv = model.conv(x)
        inner = model.act(conv) - 0.1  # the functional silu's input
    numbers = outcome.values["sparsity"]
    assert numbers["conv"]["channel_sparsity"] == 0.0  # a conv output has no exact zeros
    for layer, offs in (("act", conv <= 0), (":silu", inner <= 0), ("relu", inner <= 0)):
        expected = float(offs.float().mean(dim=(0, 2, 3)).mean())
        assert 0 < expected < 1 and numbers[layer]["channel_sparsity"] == pytest.approx(expected)


def test_a_streaming_probe_written_for_two_arguments_still_streams():
    """The activation reaches only the accumulators that ask for it."""
    from bnprobe.capture._layer_data import new_accumulator
    from bnprobe.probes.base import StreamingProbe

    class Count:
        def __init__(self):
            self.seen = 0

        def update(self, activations, labels):
            self.seen += len(activations)

        def result(self):
            return {"seen": float(self.seen)}

    class Old(StreamingProbe):
        def accumulator(self, layer, shape):
            return Count()

    assert isinstance(new_accumulator(Old(), "l", (2,), "silu"), Count)
    assert new_accumulator(SparsityProbe(), "l", (2,), "gelu").test.describe() == "a <= 0 (gelu)"


def test_a_timm_silu_model_through_the_study_has_sparsity_and_says_by_which_test(tmp_path):
    """timm's test_efficientnet (SiLU in BatchNormAct2d, 0.1 M parameters), bn and identity, through
    run_study: every activation layer's sparsity is the share of non-positive values, not 0."""
    from rich.console import Console

    import bnprobe
    from bnprobe.report import Results

    config = bnprobe.StudyConfig(model="test_efficientnet", dataset="tiny-study", variants=["bn", "identity"],
                                 samples=16, probes=["sparsity"], device="cpu", probe_workers=0,
                                 train=bnprobe.TrainConfig(epochs=1, batch_size=16))
    bnprobe.run_study(config, out=tmp_path)
    results = Results.load(tmp_path)  # the notes survive the file
    for run in results.runs:
        numbers, notes = run.probes["sparsity"], run.notes["sparsity"]
        assert set(notes) == set(numbers) == set(results.layers) and len(numbers) >= 5
        assert {note["zero_test"] for note in notes.values()} == {"a <= 0 (silu)"}
        assert all(0 < layer["channel_sparsity"] < 1 for layer in numbers.values())
    console = Console(record=True, width=100)
    bnprobe.render(results, console)
    text = console.export_text()
    assert "zero test: a <= 0 (silu) at every layer" in text and "every value is 0" not in text


def test_probing_a_study_again_files_the_zero_test_of_the_probes_it_replaces(tmp_path):
    """A study saved before notes existed (none in results.json) gets them from `bnprobe probe`; the
    other probe's notes-free numbers are kept."""
    import json

    import bnprobe

    config = bnprobe.StudyConfig(model="cnn4", dataset="tiny-study", variants=["bn"], samples=8,
                                 probes=["sparsity", "sparsity(zero_test='exact')"], device="cpu", probe_workers=0,
                                 train=bnprobe.TrainConfig(epochs=1, batch_size=16))
    saved = bnprobe.run_study(config, out=tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    for run in data["runs"]:
        del run["notes"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    results = bnprobe.reprobe_study(tmp_path, ["sparsity"], device="cpu", probe_workers=0)
    assert results.runs[0].probes == saved.runs[0].probes
    assert results.runs[0].notes == {"sparsity": saved.runs[0].notes["sparsity"]}
    exact = saved.runs[0].notes["sparsity(zero_test='exact')"]
    assert {note["zero_test"] for note in exact.values()} == {"a == 0 (relu)"}


def test_a_timm_norm_act_layer_is_counted_by_its_activations_zero_test():
    """BatchNormAct2d's output is its SiLU's: selected as a norm it must get a <= 0, not exact zeros."""
    from timm.layers import BatchNormAct2d

    import bnprobe

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), BatchNormAct2d(3, act_layer=torch.nn.SiLU))
    model.eval()
    x, y = torch.randn(12, 1, 6, 6), torch.arange(12) % 3
    probe = SparsityProbe()
    captured = bnprobe.capture(model, (x, y), layers="norm,act", probes=[probe], batch_size=5)
    assert {layer.name: layer.activation for layer in captured.layers} == {"1": "silu", "1.act": "silu"}
    numbers = bnprobe.run_probes(captured, [probe]).values["sparsity"]
    assert 0 < numbers["1"]["channel_sparsity"] == pytest.approx(numbers["1.act"]["channel_sparsity"])


def test_timm_s_memory_efficient_activations_are_named_as_the_plain_ones():
    from timm.layers import activations_me

    from bnprobe.capture._layer_kinds import is_gate

    assert activation_name(activations_me.SwishMe()) == "silu" and activation_name(activations_me.MishMe()) == "mish"
    assert activation_name(activations_me.HardSwishMe()) == "hardswish"
    assert zero_test_for(activation_name(activations_me.SwishMe())).rule != "exact"  # counted as SiLU is: a <= 0
    assert is_gate(activations_me.HardSigmoidMe()) and not is_gate(activations_me.SwishMe())
