"""probe_activations: the registered probes on activations from any source, reported as a study."""

import numpy as np
import pytest
import torch
from torch import nn

import bnprobe
from bnprobe.errors import BnprobeError
from bnprobe.probes import build_probes, run_probes


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 3)).eval()


def _data(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return torch.randn(n, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float(), labels


def _hooked(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ReLUs' outputs, by hooks of one's own, named as capture names them."""
    seen = {}
    handles = [module.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
               for name, module in model.named_modules() if isinstance(module, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


def test_activations_from_own_hooks_give_the_numbers_capture_gives():
    model, (x, y) = _model(0), _data()
    probes = build_probes("sparsity,hdbscan")
    captured = bnprobe.capture(model, (x, y), layers="act", probes=probes, variant="bn", seed=0)
    expected = run_probes(captured, probes).values
    results = bnprobe.probe_activations(_hooked(model, x), y, "sparsity,hdbscan", activation="relu")
    (run,) = results.runs
    assert (run.variant, run.seed) == ("bn", 0)
    assert results.layers == captured.names == ["2", "5"]
    for probe in ("sparsity", "hdbscan"):
        for layer, metrics in expected[probe].items():
            got = run.probes[probe][layer]
            assert got.keys() == metrics.keys()
            for metric, value in metrics.items():  # None: a null number (NaN) in both
                assert got[metric] == (None if value is None else pytest.approx(value, rel=1e-6, abs=1e-9)), \
                    (probe, layer, metric)
    assert run.notes["sparsity"]["2"]["zero_test"] == captured["2"].accumulators["sparsity"].test.describe()


def test_runs_tagged_with_variant_and_seed_compare_as_in_a_study():
    x, y = _data()
    runs = [bnprobe.ActivationRun(_hooked(_model(10 * seed + k), x), variant, seed)
            for seed in (0, 1) for k, variant in enumerate(("bn", "identity"))]
    results = bnprobe.probe_activations(runs, y, "sparsity,cka", activation="relu", model="toy", dataset="blobs")
    assert results.variants == ["bn", "identity"] and results.seeds == [0, 1]
    assert [(r.variant, r.seed) for r in results.runs] == [("bn", 0), ("identity", 0), ("bn", 1), ("identity", 1)]
    cka = {(r.variant, r.seed): r.probes["cka"]["5"]["cka"] for r in results.runs}
    assert cka[("bn", 0)] == pytest.approx(1.0) and cka[("bn", 1)] == pytest.approx(1.0)
    assert 0 < cka[("identity", 0)] < 1
    rows = bnprobe.report.metric_stats(results, "sparsity", "channel_sparsity")
    identity = [row for row in rows if row.variant == "identity"]
    assert identity and all(row.difference is not None for row in identity)  # paired with bn by seed


def test_arrays_in_float16_and_numpy_are_taken():
    x, y = _data()
    acts = _hooked(_model(0), x)
    as_float32 = bnprobe.probe_activations(acts, y, "sparsity", activation="relu").runs[0].probes
    mixed = {"2": acts["2"].half(), "5": acts["5"].numpy()}
    as_mixed = bnprobe.probe_activations(mixed, y.numpy(), "sparsity", activation="relu").runs[0].probes
    assert as_mixed["sparsity"]["5"] == as_float32["sparsity"]["5"]
    assert as_mixed["sparsity"]["2"]["channel_sparsity"] == pytest.approx(
        as_float32["sparsity"]["2"]["channel_sparsity"], abs=0.02)


@pytest.mark.parametrize(("call", "message"), [
    (lambda acts, y: bnprobe.probe_activations(acts, y, "attribution"), "probe attribution runs the model"),
    (lambda acts, y: bnprobe.probe_activations(acts, y[:-1], "sparsity"), "one row per label \\(119\\)"),
    (lambda acts, y: bnprobe.probe_activations(acts, y.float(), "sparsity"), "labels must be one integer class"),
    (lambda acts, y: bnprobe.probe_activations({"l": np.arange(120)}, y, "sparsity"), "must be floating point"),
    (lambda acts, y: bnprobe.probe_activations([bnprobe.ActivationRun(acts)] * 2, y, "sparsity"),
     "two runs have the same variant and seed"),
    (lambda acts, y: bnprobe.probe_activations([acts], y, "sparsity"), "a list of bnprobe.ActivationRun"),
])
def test_bad_input_is_one_line(call, message):
    x, y = _data()
    with pytest.raises(BnprobeError, match=message):
        call(_hooked(_model(0), x), y)
