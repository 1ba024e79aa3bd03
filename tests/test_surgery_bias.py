"""``identity+bias``: the no-BN variant that keeps the conv biases BatchNorm made redundant."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from bnprobe.errors import BnprobeError
from bnprobe.models import create_model
from bnprobe.surgery import BATCHNORM_TYPES, ChannelBias, IdentityNorm, swap_norms


class HandWrittenCNN(nn.Module):
    """The plain MNIST CNN written out by hand: conv(bias) -> ReLU, no normalisation, GAP, linear."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2))
        self.classifier = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def _layers_with_parameters(model: nn.Module) -> list[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]]]:
    """``(type, ((param name, shape), ...))`` of every module holding parameters, in order."""
    return [(type(m).__name__, tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False)))
            for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def test_cnn4_identity_bias_is_the_plain_cnn_with_conv_biases():
    variant, report = swap_norms(create_model("cnn4", num_classes=10, in_chans=1), "identity+bias")
    plain = HandWrittenCNN()
    assert _layers_with_parameters(variant) == _layers_with_parameters(plain)
    assert sum(p.numel() for p in variant.parameters()) == sum(p.numel() for p in plain.parameters())
    # the modules between the layers hold nothing: no-op norms and the same ReLU / pooling sequence
    kinds = [type(m).__name__ for m in variant.features if not isinstance(m, IdentityNorm)]
    assert kinds == [type(m).__name__ for m in plain.features]
    with torch.no_grad():  # the same weights give the same function (the hand-written ReLU is not in place)
        for p in plain.parameters():
            p.normal_()
        for mine, theirs in zip(variant.parameters(), plain.parameters(), strict=True):
            mine.copy_(theirs)
    x = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(variant(x), plain(x), rtol=0, atol=0)
    assert report.param_delta == -2 * 192 + 192  # BN's weight+bias gone, the conv biases added
    assert [r.note for r in report.records] == ["bias added to features.0 (+32)", "bias added to features.3 (+32)",
                                                "bias added to features.7 (+64)", "bias added to features.10 (+64)"]
    assert report.notes[-1] == ("bias: zero-initialised biases added to 4 producing layers and 0 ChannelBias modules "
                                "(+192 parameters)")


def _assert_biased_twin(model: nn.Module, producers: int) -> None:
    """Every BN's producer has a zero, trainable bias; at initialisation the variant computes what the
    bias-free one does; the biases learn (they get gradients)."""
    model.eval()
    biased, report = swap_norms(model, "identity+bias")
    plain, _ = swap_norms(model, "identity")
    added = [r for r in report.records if r.note.startswith("bias added to")]
    assert len(added) == producers
    for record in added:
        layer = biased.get_submodule(record.note.split()[3])
        assert isinstance(layer.bias, nn.Parameter) and layer.bias.requires_grad
        assert torch.count_nonzero(layer.bias) == 0
        assert record.params_after == layer.bias.numel()
    extra = sum(p.numel() for p in biased.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == sum(r.params_after for r in report.records) > 0
    assert not any(isinstance(m, BATCHNORM_TYPES) for m in biased.modules())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(biased(x), plain(x), rtol=0, atol=0)
    biased(x).square().sum().backward()
    assert all(biased.get_submodule(r.note.split()[3]).bias.grad is not None for r in added)


def test_bias_on_a_timm_resnet():
    model = timm.create_model("resnet18", num_classes=10)
    _assert_biased_twin(model, producers=sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()))


def test_bias_on_a_torchvision_mobilenet():
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    _assert_biased_twin(model, producers=sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()))


class _NormFirst(nn.Module):
    """A BatchNorm on the input (no producing layer), and a conv whose output a second branch reads."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv_biased = nn.Conv2d(4, 4, 1, bias=True)
        self.bn_after_biased = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(self.bn_in(x))
        z = self.bn(y) + y  # the conv's output is read twice: a bias in the conv would change the skip too
        return self.bn_after_biased(self.conv_biased(z))


def test_bias_module_where_no_layer_can_hold_it_and_none_where_one_exists():
    model = _NormFirst()
    biased, report = swap_norms(model, "identity+bias")
    notes = {r.path: r.note for r in report.records}
    assert notes["bn_in"] == "bias module added: not directly after a conv or linear layer"
    assert notes["bn"] == "bias module added: the output of conv is used elsewhere too"
    assert notes["bn_after_biased"] == "conv_biased already has a bias"
    assert isinstance(biased.bn_in, ChannelBias) and isinstance(biased.bn, ChannelBias)
    assert biased.conv.bias is None
    assert [r.params_after for r in report.records] == [3, 4, 0]
    assert report.notes[-1] == ("bias: zero-initialised biases added to 0 producing layers and 2 ChannelBias modules "
                                "(+7 parameters)")
    with torch.no_grad():
        biased.bn.bias.fill_(1.0)
    x = torch.randn(2, 3, 5, 5)
    plain, _ = swap_norms(model, "identity")
    expected = biased.conv_biased(plain.conv(x) * 2 + 1)  # the bias reaches only the normalised branch
    torch.testing.assert_close(biased(x), expected)


def test_cnn4_heads():
    gap = create_model("cnn4", num_classes=10, in_chans=1)
    flat = create_model("cnn4", num_classes=10, in_chans=1, head="flatten", img_size=28)
    assert gap.classifier.in_features == 64 and flat.classifier.in_features == 64 * 7 * 7
    assert flat(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("cnn4", num_classes=3, in_chans=1, head="flatten", img_size=8).classifier.in_features == 64 * 4
    with pytest.raises(BnprobeError, match="unknown head 'mlp'; heads: gap, flatten"):
        create_model("cnn4", num_classes=10, in_chans=1, head="mlp")
    with pytest.raises(BnprobeError, match="img_size 3 is too small for 2 max-pools"):
        create_model("cnn4", num_classes=10, in_chans=1, head="flatten", img_size=3)
