"""Swaps keep the model's affine initialisation: a replacement norm starts from the BatchNorm's weight and
bias (timm's ``zero_init_last`` zero stays zero), ``frozen``/``fold`` carry it in what they compute,
``identity`` says it has none, ``+skipinit`` takes a zero weight in its blocks as 1, and the report says so."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from click.testing import CliRunner
from test_surgery import conv_bn_relu, every_kind_of_batchnorm
from torch import nn

from bnprobe.cli import cli
from bnprobe.surgery import find_batchnorms, swap_norms

COPYING = ("groupnorm", "layernorm", "instancenorm")

#: timm's resnet18 (zero_init_last): each block's bn2 has weight 0, the other 12 norms weight 1.
RESNET18_KEPT = "affine init from BN in 20 norms: kept (weight 1, bias 0 in 12; weight 0, bias 0 in 8)"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@functools.cache
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def norm_of(model: nn.Module, path: str) -> nn.Module:
    module = model.get_submodule(path)
    return getattr(module, "norm", module)  # a timm norm-act layer's replacement holds the norm


@pytest.mark.parametrize("target", COPYING)
def test_timm_zero_init_last_survives_the_swap(target):
    assert not resnet18().layer1[0].bn2.weight.any()
    variant, report = swap_norms(resnet18(), target)
    assert torch.equal(variant.layer1[0].bn2.weight, torch.zeros(64))
    assert torch.equal(variant.bn1.weight, torch.ones(64))
    records = {r.path: r for r in report.records}
    assert (records["layer1.0.bn2"].affine_init, records["layer1.0.bn2"].affine) == ("weight 0, bias 0", "kept")
    assert (records["bn1"].affine_init, records["bn1"].affine) == ("weight 1, bias 0", "kept")
    assert report.notes == [RESNET18_KEPT]


@pytest.mark.parametrize("target", COPYING)
def test_every_kind_of_batchnorm_hands_on_its_values_exactly(target):
    model = every_kind_of_batchnorm()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, bn in find_batchnorms(model):  # parameters, and the frozen kinds' buffers
            bn.weight.copy_(torch.randn(4, generator=gen))
            bn.bias.copy_(torch.randn(4, generator=gen))
    variant, report = swap_norms(model, target)
    for path, bn in find_batchnorms(model):
        norm = norm_of(variant, path)
        assert torch.equal(norm.weight, bn.weight) and torch.equal(norm.bias, bn.bias), path
        assert isinstance(norm.weight, nn.Parameter)
    assert {(r.affine_init, r.affine) for r in report.records} == {("weight varied, bias varied", "kept")}


def test_a_batchnorm_without_affine_keeps_its_neutral_one():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False))
    variant, report = swap_norms(model, "groupnorm")
    assert torch.equal(variant[1].weight, torch.ones(4)) and torch.equal(variant[1].bias, torch.zeros(4))
    assert (report.records[0].affine_init, report.records[0].affine) == ("no affine", "kept")


def _zero_weight(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(0.5)
    return model


class WeightOnly(nn.Module):
    """A norm with a per-channel gain and no shift, as an RMSNorm has."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


@pytest.mark.parametrize("factory, affine", [
    (functools.partial(nn.GroupNorm, 2, affine=False), "not kept: GroupNorm has no weight; GroupNorm has no bias"),
    (lambda c: nn.LayerNorm([c, 5, 5]), "not kept: LayerNorm's weight is (6, 5, 5), not (6,); "
                                        "LayerNorm's bias is (6, 5, 5), not (6,)"),
    (WeightOnly, "partly kept: WeightOnly has no bias"),
    (functools.partial(nn.GroupNorm, 3), "kept"),
])
def test_a_factory_norm_takes_what_fits_and_the_record_says_what_did_not(factory, affine):
    variant, report = swap_norms(_zero_weight(conv_bn_relu()), factory)
    assert (report.records[0].affine_init, report.records[0].affine) == ("weight 0, bias 0.5", affine)
    note = f"affine init from BN in 1 norm: {affine} (weight 0, bias 0.5 in 1)"
    if affine.startswith("not kept"):  # the zero weight is lost: the note says what that changes
        note += ("; the 1 with weight 0 no longer start their branch at zero "
                 "(+skipinit starts residual branches at zero)")
    else:  # the zero weight is kept
        assert not variant[1].weight.any()
    assert report.notes == [note]
    if affine == "kept":
        assert torch.equal(variant[1].bias, torch.full((6,), 0.5))


def test_a_factory_norm_without_affine_loses_nothing_from_a_default_batchnorm():
    _, report = swap_norms(conv_bn_relu(), functools.partial(nn.GroupNorm, 2, affine=False))
    assert report.records[0].affine == "kept"


def test_identity_says_it_drops_the_zero_weights_and_what_restores_them():
    _, report = swap_norms(resnet18(), "identity")
    assert {r.affine for r in report.records} == {"not kept: identity has none"}
    assert report.notes == ["affine init from BN in 20 norms: not kept: identity has none (weight 1, bias 0 in 12; "
                            "weight 0, bias 0 in 8); the 8 with weight 0 no longer start their branch at zero "
                            "(+skipinit starts residual branches at zero)"]
    _, biased = swap_norms(resnet18(), "identity+bias")
    assert biased.notes[0] == report.notes[0]
    _, skip = swap_norms(resnet18(), "identity+skipinit")
    assert skip.notes[0] == ("affine init from BN in 20 norms: not kept: identity has none "
                             "(weight 1, bias 0 in 12; weight 0, bias 0 in 8)")


def test_frozen_and_fold_carry_the_zero_weight_in_what_they_compute():
    frozen, report = swap_norms(resnet18(), "frozen")
    assert not frozen.layer1[0].bn2.scale.any() and frozen.bn1.scale.all()
    assert report.notes == [RESNET18_KEPT]
    folded, report = swap_norms(resnet18(), "fold")
    assert not folded.layer1[0].conv2.weight.any() and folded.layer1[0].conv1.weight.all()
    assert report.notes == ["fold: 20 folded, 0 fell back to frozen", RESNET18_KEPT]


@pytest.mark.parametrize("target", [*COPYING, "frozen"])
def test_skipinit_takes_a_zero_weight_in_its_blocks_as_1_so_the_branch_still_learns(target):
    variant, report = swap_norms(resnet18(), f"{target}+skipinit")
    block = variant.layer1[0]
    assert not block.conv2.weight.any()
    gain = block.bn2.scale if target == "frozen" else block.bn2.weight
    assert gain.all()
    record = next(r for r in report.records if r.path == "layer1.0.bn2")
    assert (record.affine_init, record.affine) == ("weight 0, bias 0", "kept, weight taken as 1 for skipinit")
    assert report.notes[:3] == [
        "affine init from BN in 12 norms: kept (weight 1, bias 0 in 12)",
        "affine init from BN in 8 norms: kept, weight taken as 1 for skipinit (weight 0, bias 0 in 8)",
        "skipinit: 8 zero norm weights taken as 1 (layer1.0.bn2, layer1.1.bn2, layer2.0.bn2, ...): after the "
        "zeroed conv, a zero weight would leave both without gradient",
    ]
    assert report.notes[-1].startswith("skipinit: zero-initialised the last conv of 8 residual branches")
    variant.train()(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert block.conv2.weight.grad.any()  # with the zero weight kept as well, it would be exactly zero


def test_skipinit_keeps_a_zero_weight_outside_the_blocks_it_recognises():
    variant, report = swap_norms(_zero_weight(conv_bn_relu()), "groupnorm+skipinit")
    assert not variant[1].weight.any()
    assert report.records[0].affine == "kept"
    assert not any("taken as 1" in note for note in report.notes)


def test_the_surgery_command_shows_it():
    result = CliRunner().invoke(cli, ["surgery", "resnet18", "--to", "groupnorm"], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "weight 0, bias 0 → kept" in result.output and "weight 1, bias 0 → kept" in result.output
    assert f"note: {RESNET18_KEPT}" in result.output
