"""The extension points: norm targets by name, class or factory, skipinit blocks, datasets."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import bnprobe
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.models import create_model
from bnprobe.surgery import (
    ChannelLayerNorm,
    IdentityNorm,
    _skipinit,
    _targets,
    list_targets,
    make_variant,
    parse_target,
    register_skipinit,
    register_target,
    swap_norms,
)


@pytest.fixture(autouse=True)
def _own_tables(monkeypatch):
    """What a test registers stays in that test."""
    monkeypatch.setattr(_targets, "TARGETS", dict(_targets.TARGETS))
    monkeypatch.setattr(_skipinit, "_LAST_CONV", dict(_skipinit._LAST_CONV))


def _cnn4() -> nn.Module:
    return create_model("cnn4", num_classes=10, in_chans=1)


def _norm_types(model: nn.Module) -> list[tuple[str, int]]:
    return [(type(m).__name__, m.num_groups) for m in model.modules() if isinstance(m, nn.GroupNorm)]


def test_a_partial_is_a_target_as_in_timm():
    variant, report = swap_norms(_cnn4(), functools.partial(nn.GroupNorm, 4))
    assert _norm_types(variant) == [("GroupNorm", 4)] * 4
    assert [m.num_channels for m in variant.modules() if isinstance(m, nn.GroupNorm)] == [32, 32, 64, 64]
    assert report.target == "GroupNorm(4)"
    assert {r.new_type for r in report.records} == {"GroupNorm"}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in variant.modules())


def test_a_module_class_is_a_target_and_make_variant_takes_it():
    variant, report = make_variant(_cnn4(), ChannelLayerNorm)
    assert sum(isinstance(m, ChannelLayerNorm) for m in variant.modules()) == 4
    assert report.target == "ChannelLayerNorm"
    assert variant(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_registered_name_works_wherever_a_target_name_does():
    register_target("gn4", functools.partial(nn.GroupNorm, 4))
    assert "gn4" in list_targets()
    assert parse_target("gn4+skipinit").skipinit
    variant, report = make_variant(_cnn4(), "gn4")
    assert _norm_types(variant) == [("GroupNorm", 4)] * 4
    assert report.target == "gn4"
    assert bnprobe.StudyConfig(model="cnn4", variants="bn,gn4").variants == ["bn", "gn4"]
    with pytest.raises(UnknownNameError, match="unknown variant 'gn8'; valid variants: bn, identity, .*gn4"):
        bnprobe.StudyConfig(model="cnn4", variants="bn,gn8")


def test_register_target_is_a_decorator_too():
    @register_target("plain")
    def plain(channels: int) -> nn.Module:
        return IdentityNorm()

    _, report = swap_norms(_cnn4(), "plain")
    assert [r.new_type for r in report.records] == ["IdentityNorm"] * 4


@pytest.mark.parametrize(("name", "match"), [
    ("identity", "already registered"),
    ("bn", "already registered"),
    ("Group", "lower-case"),
    ("gn:4", "lower-case"),
    ("", "lower-case"),
])
def test_register_target_refuses_taken_and_malformed_names(name, match):
    with pytest.raises(BnprobeError, match=match):
        register_target(name, IdentityNorm)


def test_a_factory_that_does_not_take_the_channel_count_is_named():
    register_target("badgn", nn.GroupNorm)  # GroupNorm(num_groups, num_channels): one argument short
    with pytest.raises(BnprobeError, match=r"target badgn: calling it with the channel count \(32\) failed"):
        swap_norms(_cnn4(), "badgn")


def test_a_factory_that_gives_no_module_is_refused():
    with pytest.raises(BnprobeError, match="target <lambda>: gave int, not an nn.Module"):
        swap_norms(_cnn4(), lambda channels: channels)


def test_a_non_callable_target_is_refused():
    with pytest.raises(BnprobeError, match="norm target 3: give a name"):
        swap_norms(_cnn4(), 3)
    with pytest.raises(UnknownNameError):
        swap_norms(_cnn4(), "nosuch")


class _Residual(nn.Module):
    def __init__(self, channels: int = 8, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + x if self.skip else out)


def _net(*blocks: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), *blocks)


def test_a_registered_block_gets_skipinit():
    model = _net(_Residual(), _Residual())
    _, before = swap_norms(model, "identity+skipinit")
    assert before.notes[-1].startswith("skipinit: no residual blocks recognised")
    register_skipinit(_Residual, "conv2")
    variant, report = swap_norms(model, "identity+skipinit")
    assert report.notes[-1] == ("skipinit: zero-initialised the last conv of 2 residual branches "
                                "(2.conv2, 3.conv2)")
    assert all(not variant[i].conv2.weight.any() for i in (2, 3))
    assert variant[2].conv1.weight.any()
    x = torch.randn(1, 1, 6, 6)
    stem = torch.relu(variant[1](variant[0](x)))  # each block starts as its shortcut (then the ReLU)
    torch.testing.assert_close(variant[3](variant[2](stem)), stem)


def test_a_registered_function_says_which_instances_have_a_skip():
    register_skipinit(_Residual, lambda block: "conv2" if block.skip else None)
    variant, report = swap_norms(_net(_Residual(skip=True), _Residual(skip=False)), "identity+skipinit")
    assert "of 1 residual branches (2.conv2)" in report.notes[-1]
    assert variant[3].conv2.weight.any()


def test_register_skipinit_checks_what_it_is_given():
    with pytest.raises(BnprobeError, match="not an nn.Module subclass"):
        register_skipinit("Bottleneck", "conv3")
    with pytest.raises(BnprobeError, match="last_conv must be a path"):
        register_skipinit(_Residual, 2)
    register_skipinit(_Residual, "conv9")
    with pytest.raises(BnprobeError, match="_Residual at 2 has no submodule 'conv9'"):
        swap_norms(_net(_Residual()), "identity+skipinit")


def test_the_registries_are_exported_side_by_side():
    from bnprobe.data import register_dataset

    assert bnprobe.register_dataset is register_dataset
    assert bnprobe.register_target is register_target
    assert bnprobe.register_skipinit is register_skipinit
    assert callable(bnprobe.register_model) and callable(bnprobe.register_probe)
