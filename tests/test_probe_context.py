"""Probing from Python takes everything from the capture, refuses what contradicts it, and never
keeps a failure quiet."""

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnprobe
from bnprobe.data import Dataset, Split
from bnprobe.probes import _registry as base
from bnprobe.probes.base import Probe, register_probe
from bnprobe.study._run import build_seeded_model, probe_subset
from bnprobe.train import checkpoint_path, load_train_state

CPU = torch.device("cpu")


class TinyCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3))


def _data(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(3, 1, 8, 8, generator=g)[y] + torch.randn(n, 1, 8, 8, generator=g), y


def _shuffled(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------------------------------
# What capture keeps

def test_a_shuffled_loaders_capture_keeps_each_input_with_its_label_and_its_vectors():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x, y = _data(50)
    y = torch.arange(50)  # a label per sample: which sample each row is
    captured = bnprobe.capture(model, _shuffled(x, y), samples=45, variant="identity", seed=3)

    order = torch.from_numpy(captured.labels)
    assert len(order) == 45 and not torch.equal(order, torch.arange(45))  # shuffled, and cut at 45
    assert torch.equal(captured.inputs, x[order])  # row i is the sample labelled labels[i]
    assert captured.inputs.device == CPU and captured.model is model and captured.device == CPU
    assert (captured.variant, captured.seed) == ("identity", 3)
    outputs = {}
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: outputs.__setitem__(name, out))
             for name, module in captured.modules.items()]
    with torch.no_grad():
        model(captured.inputs)
    for hook in hooks:
        hook.remove()
    assert set(outputs) == set(captured.names) == {"2", "4"}
    for name in captured.names:  # the stored inputs give back exactly the captured activations
        np.testing.assert_array_equal(captured[name].vectors(), outputs[name].flatten(1).numpy())


def test_capture_refuses_a_variant_or_seed_that_is_not_one():
    x, y = _data(6)
    with pytest.raises(bnprobe.BnprobeError, match="capture variant must be a variant's name"):
        bnprobe.capture(TinyCNN(), (x, y), variant=3)
    with pytest.raises(bnprobe.BnprobeError, match="capture seed must be an integer or None, got '0'"):
        bnprobe.capture(TinyCNN(), (x, y), seed="0")


# --------------------------------------------------------------------------------------------------
# The same numbers as a study

PROBES = "sparsity,hdbscan(min_cluster_size=5),binary_patterns,attribution(samples=8,n_steps=4),layer_attribution,cka"


def test_run_probes_on_a_capture_gives_the_numbers_of_the_study(tmp_path):
    x, y = _data(60)
    data = Dataset("tiny", Split(x[:48], y[:48]), Split(x[48:], y[48:]), num_classes=3)
    config = bnprobe.StudyConfig(model="tiny", variants=["bn", "identity"], samples=30, probes=PROBES, device="cpu",
                                 train=bnprobe.TrainConfig(epochs=1, batch_size=16), probe_workers=0)
    results = bnprobe.run_study(config, model=TinyCNN(), dataset=data, out=tmp_path)

    probes = bnprobe.build_probes(PROBES)
    probed = probe_subset(data.train, config.samples)
    captures = {}
    for run in results.runs:
        assert not run.failures
        model, _ = bnprobe.make_variant(build_seeded_model(TinyCNN(), run.seed, data), run.variant)
        model.load_state_dict(load_train_state(checkpoint_path(tmp_path, run.variant, run.seed))["model"])
        captures[run.variant] = bnprobe.capture(model, probed, probes=probes, variant=run.variant, seed=run.seed)
        outcome = bnprobe.run_probes(captures[run.variant], probes, reference=captures.get("bn"))
        assert not outcome.failures
        _assert_same_numbers(outcome.values, run.probes)
    # identity compared with bn, not with itself (which gives 1 to float precision, as in the bn run)
    assert all(numbers["cka"] < 1 - 1e-6 for numbers in results.runs[1].probes["cka"].values())
    assert all(numbers["cka"] == pytest.approx(1.0) for numbers in results.runs[0].probes["cka"].values())


def _assert_same_numbers(got: dict, filed: dict) -> None:
    """``{probe: {layer: {metric: value}}}`` alike, to float precision, None (NaN) matching None."""
    assert got.keys() == filed.keys()
    for probe, layers in got.items():
        assert layers.keys() == filed[probe].keys(), probe
        for layer, numbers in layers.items():
            assert numbers.keys() == filed[probe][layer].keys(), (probe, layer)
            for metric, value in numbers.items():
                expected = filed[probe][layer][metric]
                assert value == expected if value is None or expected is None else \
                    value == pytest.approx(expected, rel=1e-6, abs=1e-9), (probe, layer, metric)


# --------------------------------------------------------------------------------------------------
# A context that contradicts the capture

@pytest.fixture(scope="module")
def shuffled_capture():
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = _data(40)
    return model, x, y, bnprobe.capture(model, _shuffled(x, y), variant="identity", seed=0)


def _hand_made(captured, **changes) -> bnprobe.ProbeContext:
    fields = dict(model=captured.model, inputs=captured.inputs, labels=torch.from_numpy(captured.labels), device=CPU,
                  variant=captured.variant, seed=captured.seed, layer_modules=dict(captured.modules))
    return bnprobe.ProbeContext(**{**fields, **changes})


def test_a_context_of_the_loaders_samples_in_dataset_order_is_refused(shuffled_capture):
    _, x, y, captured = shuffled_capture
    probes = bnprobe.build_probes("attribution(samples=8,n_steps=4)")
    # What the getting-started snippet used to do: same count, other samples at most positions.
    context = _hand_made(captured, inputs=x, labels=y)
    with pytest.raises(bnprobe.BnprobeError, match=r"^the ProbeContext contradicts the capture: its inputs are not the "
                                                   r"captured ones \(\d+ of 40 samples differ, the first at index \d+\)"
                                                   r"; its labels are not the captured ones \(\d+ of 40 samples differ"
                                                   r".*; leave the context out: run_probes\(captured, probes\) builds "
                                                   r"it from the capture$"):
        bnprobe.run_probes(captured, probes, context)
    agreeing = _hand_made(captured)
    assert bnprobe.run_probes(captured, probes, agreeing).values == bnprobe.run_probes(captured, probes).values


@pytest.mark.parametrize(("change", "message"), [
    ({"variant": "bn"}, "its variant is 'bn', the capture's 'identity'"),
    ({"variant": None}, "its variant is None, the capture's 'identity'"),
    ({"seed": 1}, "its seed is 1, the capture's 0"),
    ({"layer_modules": {}}, r"its layer_modules \(0\) are not the captured layers' modules \(2\)"),
    ({"model": TinyCNN()}, "its model is not the captured model"),
])
def test_a_context_of_another_run_is_refused_saying_what_differs(shuffled_capture, change, message):
    _, _, _, captured = shuffled_capture
    with pytest.raises(bnprobe.BnprobeError, match=f"contradicts the capture: {message}; leave the context out"):
        bnprobe.run_probes(captured, bnprobe.build_probes("sparsity"), _hand_made(captured, **change))


def test_a_reference_that_is_not_the_bn_run_on_the_same_samples_is_refused(shuffled_capture):
    model, x, y, captured = shuffled_capture
    cka = bnprobe.build_probes("cka")
    in_order = bnprobe.capture(model, (x, y), variant="bn", seed=0)
    with pytest.raises(bnprobe.BnprobeError, match=r"reference capture was made on other samples than this one \(\d+ "
                                                   r"of 40 samples differ.*\(not a shuffled loader\)"):
        bnprobe.run_probes(captured, cka, reference=in_order)
    with pytest.raises(bnprobe.BnprobeError, match="the reference capture is of identity; the reference is the bn run"):
        bnprobe.run_probes(captured, cka, reference=captured)
    unstated = bnprobe.capture(model, _shuffled(x, y))
    with pytest.raises(bnprobe.BnprobeError, match="the reference capture does not state its variant"):
        bnprobe.run_probes(captured, cka, reference=unstated)
    other_seed = bnprobe.capture(model, _shuffled(x, y), variant="bn", seed=1)
    with pytest.raises(bnprobe.BnprobeError, match="reference capture is of seed 1, this one of seed 0"):
        bnprobe.run_probes(captured, cka, reference=other_seed)
    same = bnprobe.capture(model, _shuffled(x, y), variant="bn", seed=0)  # the same loader order, same model
    assert bnprobe.run_probes(captured, cka, reference=same).values["cka"] == \
        {name: {"cka": pytest.approx(1.0)} for name in captured.names}
    with pytest.raises(bnprobe.BnprobeError, match="not both"):
        bnprobe.run_probes(captured, cka, _hand_made(captured), reference=same)


# --------------------------------------------------------------------------------------------------
# Failures are never quiet

class FailsOnSecondLayer(Probe):
    description = "fails on the second captured layer"
    needs = "vectors"
    key_metric = "mean"

    def measure(self, layer, context):
        if layer.name == "4":
            raise bnprobe.BnprobeError(f"no numbers for layer {layer.name}\nsecond line")
        return {"mean": float(layer.vectors().mean())}


@pytest.fixture()
def failing(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_probe("fails_on_4")(FailsOnSecondLayer)
    return FailsOnSecondLayer


def test_a_failing_probe_raises_by_default_and_warns_when_not_strict(shuffled_capture, failing):
    _, _, _, captured = shuffled_capture
    probes = [failing(), *bnprobe.build_probes("binary_patterns")]
    with pytest.raises(bnprobe.ProbeFailedError) as raised:
        bnprobe.run_probes(captured, probes)
    assert str(raised.value) == ("1 probe measurement failed: fails_on_4 on 4: BnprobeError: no numbers for layer 4; "
                                 "the other numbers are in this error's .outcome, and run_probes(..., strict=False) "
                                 "returns them with a warning")
    assert isinstance(raised.value, bnprobe.BnprobeError)
    kept = raised.value.outcome
    assert list(kept.values["fails_on_4"]) == ["2"] and set(kept.values["binary_patterns"]) == {"2", "4"}

    with pytest.warns(bnprobe.ProbeFailureWarning, match=r"^1 probe measurement failed: fails_on_4 on 4: "
                                                         r"BnprobeError: no numbers for layer 4$"):
        outcome = bnprobe.run_probes(captured, probes, strict=False)
    assert [(f.probe, f.layer) for f in outcome.failures] == [("fails_on_4", "4")]
    assert outcome.values == kept.values


def test_many_failures_are_named_in_one_line():
    failures = [bnprobe.probes.runner.ProbeFailure("cka", f"l{i}", "BnprobeError: no bn") for i in range(5)]
    failures += [bnprobe.probes.runner.ProbeFailure(f"p{i}", "model", f"ValueError: {i}") for i in range(4)]
    assert bnprobe.probes.runner.describe_failures(failures) == (
        "9 probe measurements failed: cka on l0, l1, l2 and 2 more: BnprobeError: no bn; p0 on model: ValueError: 0; "
        "p1 on model: ValueError: 1; 2 more failures")


def test_a_study_records_a_failing_probe_and_goes_on(failing):
    x, y = _data(60)
    data = Dataset("tiny", Split(x[:48], y[:48]), Split(x[48:], y[48:]), num_classes=3)
    config = bnprobe.StudyConfig(model="tiny", variants=["bn", "identity"], samples=24, probes="sparsity,fails_on_4",
                                 device="cpu", train=bnprobe.TrainConfig(epochs=1, batch_size=16), probe_workers=0)
    results = bnprobe.run_study(config, model=TinyCNN(), dataset=data)
    for run in results.runs:
        assert run.failures == [{"probe": "fails_on_4", "layer": "4",
                                 "error": "BnprobeError: no numbers for layer 4\nsecond line"}]
        assert set(run.probes["sparsity"]) == {"2", "4"} and list(run.probes["fails_on_4"]) == ["2"]
    console = Console(record=True, width=200)
    bnprobe.render(results, console)
    shown = console.export_text()
    assert "2 probe failures" in shown
    assert "identity seed 0 fails_on_4 @ 4: BnprobeError: no numbers for layer 4" in shown
