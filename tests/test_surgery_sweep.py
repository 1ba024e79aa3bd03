"""Every target on many real architectures: timm families and torchvision models, small inputs, CPU.

For each model and target: no BatchNorm of any kind is left (``fold`` may leave only its frozen
fallbacks), forward and backward stay finite, every activation is still called, the parameter count
changes by exactly what the report says, and ``frozen``/``fold`` keep the eval-mode function of a model
with trained-looking statistics.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import timm
import torch
import torchvision
from test_surgery import n_params, randomize_batchnorm, rel_error
from torch import nn

from bnprobe.capture._layer_kinds import count_activation_calls
from bnprobe.surgery import ChannelAffine, has_batchnorm, list_targets, swap_norms

pytestmark = pytest.mark.slow

#: timm models with BatchNorm, the smallest of each family, with the smallest input side they take.
TIMM_MODELS: dict[str, int] = {
    "resnet10t": 32, "resnext50_32x4d": 32, "legacy_seresnet18": 32, "resnetv2_50": 32, "res2net50_14w_8s": 32,
    "resnest14d": 32, "skresnet18": 32, "tresnet_m": 32, "regnetx_002": 32, "regnety_002": 32,
    "efficientnet_b0": 32, "tinynet_e": 32, "tf_efficientnetv2_b0": 32, "mixnet_s": 32, "mnasnet_small": 32,
    "fbnetc_100": 32, "fbnetv3_b": 32, "hardcorenas_a": 32, "spnasnet_100": 32, "lcnet_050": 32,
    "mobilenetv1_100": 32, "mobilenetv2_035": 32, "mobilenetv3_small_050": 32, "mobilenetv4_conv_small": 32,
    "ghostnet_050": 32, "ghostnetv2_100": 48, "repghostnet_050": 32, "rexnet_100": 32, "densenet121": 32,
    "dla46_c": 32, "dpn48b": 32, "cspresnet50": 32, "cs3darknet_s": 32, "darknet17": 32, "vgg11_bn": 32,
    "repvgg_a0": 32, "gernet_s": 32, "mobileone_s0": 32, "ese_vovnet19b_slim_dw": 32, "hgnetv2_b0": 32,
    "selecsls42b": 32, "hrnet_w18_small": 32, "xception41": 32, "inception_v3": 75, "mobilevit_xxs": 32,
    "efficientvit_b0": 32, "efficientvit_m0": 32, "fastvit_t8": 32, "repvit_m0_9": 32, "starnet_s050": 32,
    "inception_next_atto": 32, "tiny_vit_5m_224": 32,
}

#: Constructor arguments that keep a model small without changing its kind of layers.
TIMM_KWARGS: dict[str, dict] = {"vgg11_bn": {"mlp_ratio": 1 / 16}}  # a 256-wide instead of 4096-wide MLP

TORCHVISION_MODELS: dict[str, int] = {
    "resnet18": 32, "mobilenet_v2": 32, "mobilenet_v3_small": 32, "efficientnet_b0": 32, "densenet121": 32,
    "shufflenet_v2_x0_5": 32, "regnet_x_400mf": 32, "mnasnet0_5": 32,
}

MODELS = [f"timm/{n}" for n in TIMM_MODELS] + [f"torchvision/{n}" for n in TORCHVISION_MODELS]
TARGETS = [*list_targets(), "identity+skipinit"]
FUNCTION_PRESERVING = ("frozen", "fold")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Inputs are tiny, so one thread is as fast as two, and it cannot stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Reference:
    """A model with trained-looking BatchNorm statistics and what the checks compare against."""

    model: nn.Module
    x: torch.Tensor
    eval_output: torch.Tensor
    activation_calls: int
    n_params: int


@functools.lru_cache(maxsize=1)  # tests are ordered model by model: build each model once
def reference(model_id: str) -> Reference:
    source, name = model_id.split("/")
    torch.manual_seed(0)
    if source == "timm":
        model = timm.create_model(name, pretrained=False, num_classes=10, **TIMM_KWARGS.get(name, {}))
        size = TIMM_MODELS[name]
    else:
        model = getattr(torchvision.models, name)(num_classes=10)
        size = TORCHVISION_MODELS[name]
    model = randomize_batchnorm(model).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        output = model(x)
    return Reference(model, x, output, count_activation_calls(model, x), n_params(model))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model_id", MODELS)
def test_swap(model_id, target):
    ref = reference(model_id)
    variant, report = swap_norms(ref.model, target)

    assert not has_batchnorm(variant)
    fallbacks = sum(isinstance(m, ChannelAffine) for m in variant.modules())
    if target == "fold":
        assert fallbacks == sum(r.note.startswith("fell back") for r in report.records)
    assert n_params(variant) - ref.n_params == report.param_delta
    assert count_activation_calls(variant.eval(), ref.x) == ref.activation_calls
    if target in FUNCTION_PRESERVING:
        with torch.no_grad():
            assert rel_error(variant(ref.x), ref.eval_output) < 1e-4

    output = variant.train()(ref.x)
    assert torch.isfinite(output).all()
    output.square().mean().backward()
    grads = [p.grad for p in variant.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
