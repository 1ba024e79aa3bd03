import importlib.metadata
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import bnprobe
import bnprobe_cka
from bnprobe.cli import cli
from bnprobe.data import Dataset, Split
from bnprobe.errors import BnprobeError
from bnprobe.probes import LayerData, ProbeContext, get_probe, list_probes
from bnprobe.probes import _registry as base
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig
from bnprobe_cka import CKAProbe, linear_cka


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula, straight from the paper, in numpy float64."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------------------------------
# The number

def test_known_small_cases():
    # one feature each: CKA is the squared correlation; centred [-1, 0, 1] and [0, -1, 1] -> (1/2)^2
    assert linear_cka(np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [0.0], [2.0]])) == pytest.approx(0.25)
    # centred and orthogonal: nothing shared
    x, y = np.array([[1.0], [-1.0], [1.0], [-1.0]]), np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(linear_cka(np.ones((4, 2)), y))


@pytest.mark.parametrize("shape", [(40, 5), (6, 50)], ids=["feature-form", "gram-form"])
def test_invariances(shape):
    x = _random(*shape)
    rotation = np.linalg.qr(_random(shape[1], shape[1], seed=1))[0]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x + 5.0) == pytest.approx(1.0)
    y = _random(shape[0], 7, seed=2)
    assert linear_cka(x, y) == pytest.approx(_reference_cka(x, y))
    assert linear_cka(x, 0.01 * y @ _random(7, 7, seed=3)) != pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(40, 5), (6, 50)], ids=["feature-form", "gram-form"])
def test_blocks_and_torch_inputs_give_the_same_number(monkeypatch, shape):
    x, y = _random(*shape), _random(shape[0], 3, seed=4)
    expected = _reference_cka(x, y)
    monkeypatch.setattr(bnprobe_cka._linear, "BLOCK_ELEMENTS", 7)
    assert linear_cka(x, y) == pytest.approx(expected)
    assert linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y), "cpu") == pytest.approx(expected, rel=1e-6)


def _reference_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The google-research notebook's cka(gram_linear(x), gram_linear(y), debiased=True): U-centred Gram
    matrices (Song et al. 2012's unbiased HSIC), in numpy float64."""

    def u_centred(gram: np.ndarray) -> np.ndarray:
        n, gram = len(gram), gram.copy()
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0)
        return gram

    k, l_ = u_centred(x @ x.T), u_centred(y @ y.T)
    return float(k.ravel() @ l_.ravel() / (np.linalg.norm(k) * np.linalg.norm(l_)))


@pytest.mark.parametrize("shape", [(40, 5), (6, 50)], ids=["feature-form", "gram-form"])
def test_the_debiased_estimator_is_the_unbiased_hsic_formula(monkeypatch, shape):
    x, y = _random(*shape) + 3.0, _random(shape[0], 7, seed=2)
    expected = _reference_debiased_cka(x, y)
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-10)
    assert linear_cka(x, y, debiased=True) != pytest.approx(linear_cka(x, y), abs=1e-3)
    assert bnprobe_cka.cka_matrix_values([x], [y], debiased=True)[0, 0] == pytest.approx(expected, abs=1e-10)
    assert linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert bnprobe_cka.cka_matrix_values([x], debiased=True)[0, 0] == 1.0
    monkeypatch.setattr(bnprobe_cka._linear, "BLOCK_ELEMENTS", 7)
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-10)


def test_on_independent_inputs_at_small_n_the_debiased_estimator_reads_about_0_and_the_biased_does_not():
    pairs = [(_random(30, 60, seed=2 * i), _random(30, 60, seed=2 * i + 1)) for i in range(10)]
    biased = [linear_cka(x, y) for x, y in pairs]
    debiased = [linear_cka(x, y, debiased=True) for x, y in pairs]
    assert min(biased) > 0.5
    assert abs(np.mean(debiased)) < 0.05 and max(abs(d) for d in debiased) < 0.2


def test_the_debiased_option_is_a_probe_parameter_and_needs_4_samples():
    probe = get_probe("cka", debiased=True)
    assert probe.key == "cka(debiased=True)" and get_probe("cka_matrix", debiased=True).debiased
    bn, other = _layer(_random(30, 4).astype(np.float32)), _layer(_random(30, 6, seed=5).astype(np.float32))
    assert probe.measure(other, _context("identity", bn))["cka"] == pytest.approx(
        _reference_debiased_cka(bn.vectors().astype(np.float64), other.vectors().astype(np.float64)), abs=1e-6)
    with pytest.raises(BnprobeError, match=r"^cka: debiased must be true or false, got 'yes'$"):
        get_probe("cka", debiased="yes")
    with pytest.raises(BnprobeError, match=r"^cka: the debiased estimator needs at least 4 samples, got 3$"):
        linear_cka(np.zeros((3, 2)), np.zeros((3, 2)), debiased=True)


def test_samples_must_match():
    with pytest.raises(BnprobeError, match=r"same samples; got shapes \(5, 2\) and \(4, 2\)"):
        linear_cka(np.zeros((5, 2)), np.zeros((4, 2)))


# --------------------------------------------------------------------------------------------------
# The probe

def _layer(vectors: np.ndarray) -> LayerData:
    return LayerData("block.act", (vectors.shape[1],), np.zeros(len(vectors)), load_vectors=lambda: vectors)


def _context(variant: str, reference: LayerData | None) -> ProbeContext:
    return ProbeContext(model=nn.Identity(), inputs=torch.zeros(0), labels=torch.zeros(0), device=torch.device("cpu"),
                        variant=variant, reference=lambda name: reference if name == "block.act" else None)


def test_probe_compares_with_the_bn_run_and_needs_one():
    bn, other = _layer(_random(30, 4).astype(np.float32)), _layer(_random(30, 6, seed=5).astype(np.float32))
    probe = get_probe("cka")
    assert probe.measure(bn, _context("bn", None)) == {"cka": pytest.approx(1.0)}
    assert probe.measure(other, _context("identity", bn)) == {"cka": pytest.approx(
        _reference_cka(bn.vectors().astype(np.float64), other.vectors().astype(np.float64)))}
    with pytest.raises(BnprobeError, match="no bn run to compare layer block.act of identity with; add the bn"):
        probe.measure(other, _context("identity", None))


def test_a_context_that_does_not_state_its_variant_is_refused_not_compared_with_itself():
    layer = _layer(_random(30, 4).astype(np.float32))
    unstated = ProbeContext(model=nn.Identity(), inputs=torch.zeros(0), labels=torch.zeros(0),
                            device=torch.device("cpu"))
    assert unstated.variant is None  # no default that passes for the bn run
    with pytest.raises(BnprobeError, match="probe cka compares each layer with the bn run, but this run's variant "
                                           r"is not stated; .*capture\(\.\.\., variant='identity'\)"):
        get_probe("cka").measure(layer, unstated)


def test_run_probes_refuses_a_capture_of_unstated_variant_and_compares_with_the_given_reference():
    model = _TinyCNN()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 3
    probes = [get_probe("cka")]
    with pytest.raises(BnprobeError, match="variant is not stated"):
        bnprobe.run_probes(bnprobe.capture(model, (x, y), layers="act,conv"), probes)
    bn = bnprobe.capture(model, (x, y), layers="act,conv", variant="bn")
    other = bnprobe.capture(_TinyCNN(), (x, y), layers="act,conv", variant="identity")
    assert bnprobe.run_probes(bn, probes).values["cka"] == {name: {"cka": pytest.approx(1.0)} for name in bn.names}
    compared = bnprobe.run_probes(other, probes, reference=bn).values["cka"]
    for name in bn.names:
        expected = _reference_cka(bn[name].vectors().astype(np.float64), other[name].vectors().astype(np.float64))
        assert compared[name]["cka"] == pytest.approx(expected, rel=1e-6) and expected < 0.99
    with pytest.raises(BnprobeError, match="no bn run to compare layer 0 of identity with"):
        bnprobe.run_probes(other, probes)


# --------------------------------------------------------------------------------------------------
# Discovery

def test_the_entry_point_is_discovered():
    info = {i.name: i for i in list_probes()}["cka"]
    assert info.source == "bnprobe-cka" and info.cls is CKAProbe and not info.broken
    assert CKAProbe.name == "cka" and CKAProbe.needs == "vectors" and CKAProbe.key_metric == "cka"


def test_a_broken_plugin_is_listed_as_broken_and_skipped(monkeypatch):
    list_probes()  # the real registry, loaded once
    broken = importlib.metadata.EntryPoint(name="broken", value="bnprobe_no_such_module:Probe",
                                           group=base.ENTRY_POINT_GROUP)
    real = list(importlib.metadata.entry_points(group=base.ENTRY_POINT_GROUP))
    monkeypatch.setattr(base, "entry_points", lambda group: [broken, *real])
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_PLUGINS_LOADED", False)

    everything = {i.name: i for i in list_probes(include_broken=True)}
    assert everything["broken"].broken
    assert everything["broken"].error.startswith("ModuleNotFoundError")
    assert "broken" not in [i.name for i in list_probes()]
    assert not everything["cka"].broken
    with pytest.raises(BnprobeError, match="probe 'broken' from bnprobe_no_such_module failed to load"):
        get_probe("broken")


def test_bnprobe_probes_lists_cka():
    result = CliRunner().invoke(cli, ["probes"], terminal_width=200)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "│ cka " in line)
    assert "bnprobe-cka" in line and "vectors" in line


# --------------------------------------------------------------------------------------------------
# In a study

class _TinyCNN(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def _tiny_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset("tiny", Split(torch.randn(48, 1, 8, 8, generator=g), torch.arange(48) % 3),
                   Split(torch.randn(12, 1, 8, 8, generator=g), torch.arange(12) % 3), num_classes=3)


def _tiny_study(variants: tuple[str, ...], out=None):
    config = StudyConfig(model="tiny", variants=variants, samples=24, probes=["cka"], device="cpu",
                         train=TrainConfig(epochs=1, batch_size=16))
    return run_study(config, model=_TinyCNN(), dataset=_tiny_data(), out=out)


def test_a_study_compares_each_variant_with_bn():
    results = _tiny_study(("bn", "identity"))
    bn, identity = results.runs
    assert results.layers == ["2"]
    assert not bn.failures and not identity.failures
    assert bn.probes["cka"]["2"]["cka"] == pytest.approx(1.0)
    assert 0.0 <= identity.probes["cka"]["2"]["cka"] < 1.0


def test_bn_listed_after_a_variant_is_still_its_reference():
    """The bn run of each seed is probed first, whatever the order of the variants, and the results
    keep the order given."""
    identity, bn = _tiny_study(("identity", "bn")).runs
    assert (identity.variant, bn.variant) == ("identity", "bn")
    assert not identity.failures
    assert 0.0 <= identity.probes["cka"]["2"]["cka"] < 1.0 and bn.probes["cka"]["2"]["cka"] == pytest.approx(1.0)
    assert identity.probes["cka"] == _tiny_study(("bn", "identity")).runs[1].probes["cka"]


def test_probing_again_finds_the_bn_reference_whatever_the_variants_order(tmp_path):
    from bnprobe.study import reprobe_study

    first = _tiny_study(("identity", "bn"), out=tmp_path / "out")
    again = reprobe_study(tmp_path / "out", ["cka"], model=_TinyCNN(), dataset=_tiny_data(), device="cpu")
    assert [(r.variant, r.failures) for r in again.runs] == [("identity", []), ("bn", [])]
    assert again.runs[0].probes["cka"] == first.runs[0].probes["cka"]  # the same weights, the same number


def test_a_study_without_bn_is_refused_before_it_trains(monkeypatch):
    import bnprobe.study._run

    monkeypatch.setattr(bnprobe.study._run, "train_model", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(BnprobeError, match="probe cka compares each variant with the bn run; add bn to the variants"):
        _tiny_study(("identity",))
