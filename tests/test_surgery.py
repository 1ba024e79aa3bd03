"""Norm surgery and checkpoint loading: each target on tiny models with hand-checked numbers."""

from __future__ import annotations

import argparse
import functools
import json

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import BatchNormAct2d, Conv2dSame, FrozenBatchNormAct2d, StdConv2d
from timm.layers.norm_act import convert_sync_batchnorm
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from bnprobe.capture._layer_kinds import activation_modules, count_activation_calls
from bnprobe.errors import BnprobeError, NoBatchNormError, UnknownNameError
from bnprobe.models import load_checkpoint
from bnprobe.surgery import (
    ChannelAffine,
    IdentityNorm,
    InstanceNorm,
    NormAct,
    SwapRecord,
    TargetSpec,
    apply_skipinit,
    find_batchnorms,
    has_batchnorm,
    list_targets,
    make_variant,
    parse_target,
    swap_norms,
)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm trained-looking statistics and affine values, in place; returns ``model``.

    With the default mean 0 / var 1 / weight 1 / bias 0 a BatchNorm is almost the identity in eval
    mode, and a wrong fold would go unnoticed.  The ranges stay near 1 so that deep models stay well
    conditioned: their own float32 rounding error must stay far below the 1e-4 the fold checks allow.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, bn in find_batchnorms(model):
            for name, low, high in (("running_mean", -0.1, 0.1), ("running_var", 0.8, 1.2),
                                    ("weight", 0.8, 1.2), ("bias", -0.1, 0.1)):
                t = getattr(bn, name, None)
                if t is not None:
                    t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)
    return model


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn_relu(channels: int = 6, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())


@functools.cache
def timm_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


# --------------------------------------------------------------------------------------------------
# Target lookup


def test_list_targets():
    assert list_targets() == ["identity", "groupnorm", "layernorm", "instancenorm", "frozen", "fold"]


@pytest.mark.parametrize("spec, expected", [
    ("identity", TargetSpec("identity")),
    ("GroupNorm:8", TargetSpec("groupnorm", arg=8)),
    ("identity+skipinit", TargetSpec("identity", skipinit=True)),
    (" groupnorm:4+skipinit ", TargetSpec("groupnorm", arg=4, skipinit=True)),
    ("identity+bias+skipinit", TargetSpec("identity", skipinit=True, bias=True)),
    ("identity+skipinit+bias", TargetSpec("identity", skipinit=True, bias=True)),
])
def test_parse_target(spec, expected):
    assert parse_target(spec) == expected
    assert parse_target(str(expected)) == expected


@pytest.mark.parametrize("spec, error, fragment", [
    ("batchnorm", UnknownNameError, "available: identity, groupnorm, layernorm, instancenorm, frozen, fold"),
    ("identity:3", BnprobeError, "takes no ':' argument"),
    ("groupnorm:x", BnprobeError, "positive integer G"),
    ("groupnorm:0", BnprobeError, "positive integer G"),
    ("identity+fixup", BnprobeError, "unknown option 'fixup'; options: bias, skipinit"),
    ("groupnorm+bias", BnprobeError, r"\+bias applies to identity only; groupnorm keeps a per-channel shift"),
    ("fold+bias", BnprobeError, r"\+bias applies to identity only"),
])
def test_parse_target_errors(spec, error, fragment):
    with pytest.raises(error, match=fragment):
        parse_target(spec)


# --------------------------------------------------------------------------------------------------
# Finding every kind of BatchNorm


def every_kind_of_batchnorm() -> nn.Module:
    """One of each BatchNorm kind bnprobe handles, each on a 4-channel input of the rank it expects."""
    return nn.ModuleDict({
        "bn1d": nn.BatchNorm1d(4),
        "bn2d": nn.BatchNorm2d(4),
        "bn3d": nn.BatchNorm3d(4),
        "sync": nn.SyncBatchNorm(4),
        "bnact": BatchNormAct2d(4, act_layer=nn.SiLU),
        "syncact": convert_sync_batchnorm(BatchNormAct2d(4, act_layer=nn.GELU)),
        "frozen": FrozenBatchNorm2d(4),
        "frozenact": FrozenBatchNormAct2d(4, act_layer=nn.ReLU),
    })


def test_find_batchnorms_every_kind():
    model = every_kind_of_batchnorm()
    assert [p for p, _ in find_batchnorms(model)] == list(model.keys())
    assert has_batchnorm(model)
    assert not has_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU()))


@pytest.mark.parametrize("target", list_targets())
def test_every_kind_is_swapped_and_keeps_its_activation(target):
    model = every_kind_of_batchnorm()
    variant, report = swap_norms(model, target)
    assert not has_batchnorm(variant)
    acts = {r.path: r.activation for r in report.records}
    assert acts == {"bn1d": None, "bn2d": None, "bn3d": None, "sync": None, "bnact": "SiLU",
                    "syncact": "GELU", "frozen": None, "frozenact": "ReLU"}
    assert [p for p, _ in activation_modules(variant)] == ["bnact.act", "syncact.act", "frozenact.act"]
    # frozen batchnorms have no parameters, plain ones have weight and bias
    assert [r.params_before for r in report.records] == [8, 8, 8, 8, 8, 8, 0, 0]


# --------------------------------------------------------------------------------------------------
# Each target, hand-checked


def test_identity_leaves_conv_then_relu():
    model = conv_bn_relu()
    variant, report = swap_norms(model, "identity")
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(variant(x), F.relu(model[0](x)))
    assert report.n_swapped == 1 and report.param_delta == -12
    assert report.records[0] == SwapRecord("1", "BatchNorm2d", "IdentityNorm", 12, 0, affine_init="weight 1, bias 0",
                                           affine="not kept: identity has none")


class SharedInput(nn.Module):
    """The norm's input is read again after an in-place activation has run (as in DPN)."""

    def __init__(self):
        super().__init__()
        self.bn = BatchNormAct2d(3, act_layer=nn.ReLU, inplace=True)

    def forward(self, x):
        y = x * 1.0
        return self.bn(y) + y


def test_identity_does_not_let_an_inplace_activation_overwrite_its_input():
    variant, _ = swap_norms(SharedInput(), "identity")
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(variant(x), F.relu(x) + x)


def test_identity_puts_an_nn_identity_that_hands_on_a_copy():
    variant, _ = swap_norms(conv_bn_relu(), "identity")
    norm = variant[1]
    assert type(norm) is IdentityNorm and isinstance(norm, nn.Identity)  # as the docs say
    assert not list(norm.parameters()) and not list(norm.buffers())
    x = torch.randn(2, 6, 3, 3)
    out = norm(x)
    assert out is not x and torch.equal(out, x)  # a copy, unlike nn.Identity's own forward


@pytest.mark.parametrize("channels, target, groups", [
    (48, "groupnorm", 16),  # gcd(32, 48)
    (6, "groupnorm", 2),  # gcd(32, 6)
    (64, "groupnorm", 32),
    (6, "groupnorm:3", 3),
])
def test_groupnorm_groups(channels, target, groups):
    variant, report = swap_norms(conv_bn_relu(channels), target)
    norm = variant[1]
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == groups
    assert report.param_delta == 0  # 2C affine parameters before and after
    x = torch.randn(2, channels, 4, 4)
    torch.testing.assert_close(norm(x), F.group_norm(x, groups, eps=1e-5))


def test_groupnorm_groups_must_divide_channels():
    with pytest.raises(BnprobeError, match=r"layer 1: groupnorm:4 .* has 6 channels"):
        swap_norms(conv_bn_relu(6), "groupnorm:4")


@pytest.mark.parametrize("bn, shape", [
    (nn.BatchNorm1d(6), (4, 6)),
    (nn.BatchNorm1d(6), (4, 6, 5)),
    (nn.BatchNorm2d(6), (4, 6, 5, 5)),
    (nn.BatchNorm3d(6), (2, 6, 3, 3, 3)),
])
def test_layernorm_normalises_channels_at_each_position(bn, shape):
    variant, _ = swap_norms(nn.Sequential(bn), "layernorm")
    x = torch.randn(shape) * 3 + 1
    y = variant(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=1), torch.zeros_like(y.mean(dim=1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones_like(y.mean(dim=1)), atol=1e-3, rtol=0)


@pytest.mark.parametrize("bn, shape", [
    (nn.BatchNorm1d(6), (4, 6, 5)),
    (nn.BatchNorm2d(6), (4, 6, 5, 5)),
    (nn.BatchNorm3d(6), (2, 6, 3, 3, 3)),
])
def test_instancenorm_normalises_each_sample_and_channel(bn, shape):
    variant, report = swap_norms(nn.Sequential(bn), "instancenorm")
    assert isinstance(variant[0], InstanceNorm) and report.param_delta == 0
    x = torch.randn(shape) * 3 + 1
    torch.testing.assert_close(variant(x), F.instance_norm(x, eps=1e-5))


def test_frozen_computes_the_eval_mode_batchnorm_in_both_modes():
    model = randomize_batchnorm(conv_bn_relu()).eval()
    variant, report = swap_norms(model, "frozen")
    affine = variant[1]
    assert isinstance(affine, ChannelAffine)
    assert [n for n, _ in affine.named_parameters()] == ["scale", "shift"]
    assert report.param_delta == 0
    bn = model[1]
    expected_scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(affine.scale, expected_scale.detach())
    torch.testing.assert_close(affine.shift, (bn.bias - bn.running_mean * expected_scale).detach())
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(variant(x), model(x))
        torch.testing.assert_close(variant.train()(x), model(x))  # no batch statistics, ever


def test_frozen_keeps_frozen_batchnorm_parameter_free():
    variant, report = swap_norms(nn.Sequential(FrozenBatchNorm2d(4)), "frozen")
    assert n_params(variant) == 0 and report.param_delta == 0
    assert [n for n, _ in variant[0].named_buffers()] == ["scale", "shift"]


class FoldNet(nn.Module):
    """Every layer kind fold handles: conv without bias, depthwise, transposed with groups, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = BatchNormAct2d(8, act_layer=nn.ReLU)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)
        self.bn3 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.bn4 = nn.BatchNorm1d(5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv(x)))
        x = self.bn3(self.up(self.bn2(self.dw(x))))
        return self.bn4(self.fc(x.mean(dim=(2, 3))))


def test_fold_keeps_the_eval_function_with_no_norm_left():
    model = randomize_batchnorm(FoldNet()).eval()
    variant, report = swap_norms(model, "fold")
    assert not has_batchnorm(variant)
    assert not any(isinstance(m, ChannelAffine) for m in variant.modules())
    assert [r.note for r in report.records] == ["folded into conv (bias added: +8)", "folded into dw",
                                                "folded into up", "folded into fc"]
    assert report.notes[0] == "fold: 4 folded, 0 fell back to frozen"
    # 2 * (8 + 8 + 4 + 5) BatchNorm parameters go, the conv gains an 8-element bias
    assert report.param_delta == -50 + 8 == n_params(variant) - n_params(model)
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        assert rel_error(variant(x), model(x)) < 1e-4
    assert isinstance(variant.bn2, NormAct) and isinstance(variant.bn2.act, nn.ReLU)


class NotAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(self.bn_in(x))
        return self.bn(y) + y  # the conv output also feeds the sum


def test_fold_falls_back_to_frozen_and_says_why():
    model = randomize_batchnorm(NotAfterConv()).eval()
    variant, report = swap_norms(model, "fold")
    assert [r.note for r in report.records] == [
        "fell back to frozen: not directly after a conv or linear layer",
        "fell back to frozen: the output of conv is used elsewhere too",
    ]
    assert [r.new_type for r in report.records] == ["ChannelAffine", "ChannelAffine"]
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert rel_error(variant(x), model(x)) < 1e-4


@pytest.mark.parametrize("model, note", [
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Identity(), nn.BatchNorm2d(4)), "folded into 0"),
    (nn.Sequential(StdConv2d(3, 4, 1), nn.BatchNorm2d(4)),
     "fell back to frozen: StdConv2d 0 computes its output its own way"),
    (nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 1)), nn.BatchNorm2d(4)),
     "fell back to frozen: ParametrizedConv2d 0 computes its output its own way"),
    (nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.BatchNorm2d(4)), "folded into 0"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),
     "fell back to frozen: follows ReLU 1, not a conv or linear layer"),
])
def test_fold_only_where_it_is_exact(model, note):
    model = randomize_batchnorm(model).eval()
    variant, report = swap_norms(model, "fold")
    assert report.records[0].note == note
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert rel_error(variant(x), model(x)) < 1e-4


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent control flow


def test_fold_on_a_model_that_does_not_trace():
    _, report = swap_norms(Untraceable(), "fold")
    assert report.records[0].note == "fell back to frozen: the model does not trace with torch.fx (TraceError)"
    assert report.notes[0] == ("fold: 0 folded, 1 fell back to frozen "
                               "(the model does not trace with torch.fx (TraceError))")


def test_fold_timm_resnet18_with_trained_statistics():
    model = randomize_batchnorm(timm.create_model("resnet18", pretrained=False, num_classes=10)).eval()
    variant, report = swap_norms(model, "fold")
    assert report.notes[0] == "fold: 20 folded, 0 fell back to frozen"
    assert not has_batchnorm(variant)
    assert not any(isinstance(m, ChannelAffine) for m in variant.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_error(variant.eval()(x), model(x)) < 1e-4


# --------------------------------------------------------------------------------------------------
# timm norm-act layers keep their activation and dropout


@pytest.mark.parametrize("target", list_targets())
def test_batchnormact_keeps_its_act_and_drop(target):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormAct2d(4, act_layer=nn.SiLU, drop_layer=nn.Dropout)).eval()
    variant, report = swap_norms(model, target)
    layer = variant[1]
    assert isinstance(layer, NormAct) and isinstance(layer.act, nn.SiLU) and isinstance(layer.drop, nn.Dropout)
    assert [n for n, _ in layer.named_children()] == ["norm", "drop", "act"]
    assert report.records[0].activation == "SiLU"
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(variant(x), F.silu(layer.norm(variant[0](x))))


@pytest.mark.parametrize("target", list_targets())
@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "efficientnet_b0"])
def test_timm_models_keep_every_activation(name, target):
    model = timm_model(name)
    x = torch.randn(2, 3, 64, 64)
    variant, report = swap_norms(model, target)
    assert not has_batchnorm(variant)
    assert count_activation_calls(variant.eval(), x) == count_activation_calls(model, x)
    assert [p for p, _ in activation_modules(variant)] == [p for p, _ in activation_modules(model)]
    assert any(r.activation for r in report.records)


# --------------------------------------------------------------------------------------------------
# skipinit


def test_skipinit_timm_resnet_blocks_start_as_their_shortcut():
    model = timm_model("resnet10t")
    variant, report = swap_norms(model, "identity+skipinit")
    assert report.notes[-1] == ("skipinit: zero-initialised the last conv of 4 residual branches "
                                "(layer1.0.conv2, layer2.0.conv2, layer3.0.conv2, ...)")
    block = variant.layer1[0]
    assert block.conv2.weight.abs().sum() == 0
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))  # act(0 + shortcut)


def test_apply_skipinit_torchvision_blocks_with_a_skip_only():
    resnet = torchvision.models.resnet18(num_classes=10)
    assert apply_skipinit(resnet) == [f"layer{i}.{j}.conv2" for i in range(1, 5) for j in range(2)]
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10)
    paths = apply_skipinit(mobilenet)
    with_skip = [p for p, m in mobilenet.named_modules() if getattr(m, "use_res_connect", False)]
    assert paths == [f"{p}.conv.2" for p in with_skip] and len(paths) == 10
    assert all(mobilenet.get_submodule(p).weight.abs().sum() == 0 for p in paths)


def test_skipinit_on_an_unrecognised_model():
    _, report = swap_norms(conv_bn_relu(), "identity+skipinit")
    assert report.notes[-1] == "skipinit: no residual blocks recognised in Sequential; nothing zero-initialised"


# --------------------------------------------------------------------------------------------------
# swap_norms / make_variant contracts


@pytest.mark.parametrize("target", list_targets())
def test_input_model_is_not_mutated(target):
    model = randomize_batchnorm(FoldNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    swap_norms(model, f"{target}+skipinit")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in model.modules()] == types


def test_no_batchnorm_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(NoBatchNormError, match="Sequential has no BatchNorm layer: there is nothing to compare"):
        swap_norms(model, "identity")
    with pytest.raises(NoBatchNormError):
        make_variant(model, "bn")


def test_unknown_target_lists_the_names():
    with pytest.raises(UnknownNameError, match="unknown norm target 'batchnorm'; available: identity, "):
        swap_norms(conv_bn_relu(), "batchnorm")


def test_report_to_dict():
    _, report = swap_norms(conv_bn_relu(), "groupnorm:3")
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {
        "target": "groupnorm:3", "n_swapped": 1, "params_before": 12, "params_after": 12, "param_delta": 0,
        "records": [{"path": "1", "old_type": "BatchNorm2d", "new_type": "GroupNorm", "params_before": 12,
                     "params_after": 12, "activation": None, "note": "", "affine_init": "weight 1, bias 0",
                     "affine": "kept", "settings": "3, 6, eps=1e-05, affine=True, bias=True"}],
        "notes": ["affine init from BN in 1 norm: kept (weight 1, bias 0 in 1)"],
    }


def test_make_variant_bn_is_a_copy_with_an_empty_report():
    model = conv_bn_relu()
    copy, report = make_variant(model, "bn")
    assert copy is not model and copy[1] is not model[1] and isinstance(copy[1], nn.BatchNorm2d)
    assert (report.target, report.n_swapped, report.param_delta) == ("bn", 0, 0)


def test_variants_share_their_initial_weights():
    model = conv_bn_relu()
    for variant in ["bn", "identity", "groupnorm", "layernorm", "instancenorm", "frozen"]:
        copy, _ = make_variant(model, variant)
        assert torch.equal(copy[0].weight, model[0].weight) and copy[0].weight is not model[0].weight


# --------------------------------------------------------------------------------------------------
# Checkpoints


def test_load_plain_state_dict(tmp_path):
    source = randomize_batchnorm(conv_bn_relu())
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    model = conv_bn_relu(seed=1)
    load_checkpoint(model, tmp_path / "plain.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(),
                                                    strict=True))


def test_load_timm_training_checkpoint(tmp_path):
    source = randomize_batchnorm(conv_bn_relu())
    weights = {f"module.{k}": v for k, v in source.state_dict().items()}
    ema = {k: torch.zeros_like(v) for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "arch": "tiny", "state_dict": weights, "state_dict_ema": ema,
                "args": argparse.Namespace(lr=0.1)}, tmp_path / "checkpoint.pth.tar")
    model = conv_bn_relu(seed=1)
    load_checkpoint(model, str(tmp_path / "checkpoint.pth.tar"))
    torch.testing.assert_close(model[0].weight, source[0].weight)
    torch.testing.assert_close(model[1].running_var, source[1].running_var)  # not the zeroed EMA copy


def test_load_ema_only_checkpoint(tmp_path):
    source = randomize_batchnorm(conv_bn_relu())
    torch.save({"state_dict_ema": source.state_dict()}, tmp_path / "ema.pt")
    model = conv_bn_relu()
    load_checkpoint(model, tmp_path / "ema.pt")
    torch.testing.assert_close(model[1].weight, source[1].weight)


@pytest.mark.parametrize("checkpoint, message", [
    (lambda sd: {**sd, "0.weight": torch.zeros(6, 3, 5, 5)},
     r"does not fit Sequential: 0.weight has shape \(6, 3, 5, 5\) in the checkpoint but \(6, 3, 3, 3\) in the model"),
    (lambda sd: {k: v for k, v in sd.items() if k != "1.running_mean"},
     "key 1.running_mean is missing from the checkpoint"),
    (lambda sd: {**sd, "2.weight": torch.zeros(1)}, "the checkpoint has key 2.weight, which the model does not"),
    (lambda sd: {"model": {"epoch": 1}}, "holds no state_dict"),
])
def test_checkpoint_that_does_not_fit(tmp_path, checkpoint, message):
    model = conv_bn_relu()
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(checkpoint(conv_bn_relu().state_dict()), tmp_path / "bad.pt")
    with pytest.raises(BnprobeError, match=message):
        load_checkpoint(model, tmp_path / "bad.pt")
    assert all(torch.equal(untouched[k], v) for k, v in model.state_dict().items())


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BnprobeError, match="not found"):
        load_checkpoint(conv_bn_relu(), tmp_path / "nope.pt")
