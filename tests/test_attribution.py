import math

import numpy as np
import pytest
import torch
from torch import nn

from bnprobe.capture import capture
from bnprobe.errors import BnprobeError
from bnprobe.probes import LayerData, ProbeContext, get_probe
from bnprobe.probes._attribution import gini, top_mass
from bnprobe.probes.runner import run_probes

CPU = torch.device("cpu")


def _tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


class _ReusedRelu(nn.Module):
    """Two convs sharing one ReLU module, the way torchvision's ResNet blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))))


class _TwoRelus(_ReusedRelu):
    """The same network with a separate ReLU per call."""

    def __init__(self) -> None:
        super().__init__()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu2(self.conv2(self.relu(self.conv1(x)))))


def _context(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> ProbeContext:
    return ProbeContext(model=model, inputs=x, labels=y, device=CPU, **kwargs)


def test_gini_and_top_mass_by_hand():
    rows = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    # G = 2 * sum(i * x_(i)) / (n * sum x) - (n + 1) / n; [1, 2, 3, 4]: 2 * 30 / 40 - 5 / 4 = 0.25
    np.testing.assert_allclose(gini(rows)[:3].numpy(), [0.75, 0.0, 0.25])
    # 5 % of 4 elements rounds up to one element
    np.testing.assert_allclose(top_mass(rows)[:3].numpy(), [1.0, 0.25, 0.4])
    assert math.isnan(gini(rows)[3]) and math.isnan(top_mass(rows)[3])
    # 5 % of 40 elements is two: (40 + 39) / (40 * 41 / 2)
    assert float(top_mass(torch.arange(1.0, 41.0)[None])) == pytest.approx(79 / 820)
    assert float(gini(torch.tensor([[7.0]]))) == 0.0


def test_integrated_gradients_on_a_linear_model_is_x_times_w():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(10, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    probe = get_probe("attribution", samples=8, internal_batch_size=3, n_steps=5)
    result = probe.measure(None, _context(model, x, y))
    # zero baseline, constant gradient: IG is exactly x * w[target], and it is complete
    expected = (x[:8] * model.weight.detach()[y[:8]]).abs()
    assert result["gini"] == pytest.approx(float(gini(expected).mean()), rel=1e-5)
    assert result["top5_mass"] == pytest.approx(float(top_mass(expected).mean()), rel=1e-5)
    assert result["convergence_delta"] == pytest.approx(0.0, abs=1e-5)
    assert probe.key == "attribution(internal_batch_size=3,n_steps=5,samples=8)"


def test_saliency_and_layer_gradcam_give_finite_numbers_and_restore_the_model(tiny_split):
    model = _tiny_cnn()
    model.train()
    model[0].weight.requires_grad_(False)
    x, y = tiny_split.x, tiny_split.y % 3
    captured = capture(model, (x, y))
    probes = [get_probe("attribution", method="saliency"), get_probe("layer_attribution")]
    outcome = run_probes(captured, probes)  # the context comes from the capture

    assert not outcome.failures
    saliency = outcome.values["attribution(method='Saliency')"]
    assert list(saliency) == ["model"]
    gradcam = outcome.values["layer_attribution"]
    assert list(gradcam) == captured.names == ["2", "4"]
    for numbers in [saliency["model"], *gradcam.values()]:
        assert set(numbers) == {"gini", "top5_mass"}
        assert 0.0 <= numbers["gini"] < 1.0 and 0.0 < numbers["top5_mass"] <= 1.0
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()][:2] == [False, True]
    assert model[2].inplace and model[4].inplace
    assert all(p.grad is None for p in model.parameters())


def test_each_call_of_a_reused_module_is_its_own_layer(tiny_split):
    torch.manual_seed(1)
    reused = _ReusedRelu()
    separate = _TwoRelus()
    separate.load_state_dict(reused.state_dict())
    x, y = tiny_split.x[:8], tiny_split.y[:8] % 3
    probe = get_probe("layer_attribution")
    captured = capture(reused, (x, y))
    assert captured.names == ["relu#0", "relu#1"]
    context = _context(reused, x, y, layer_modules=captured.modules)
    twin = _context(separate, x, y, layer_modules={"relu": separate.relu, "relu2": separate.relu2})
    first, second = (probe.measure(layer, context) for layer in captured.layers)
    labels = y.numpy()
    assert first == pytest.approx(probe.measure(LayerData("relu", (3, 8, 8), labels), twin))
    assert second == pytest.approx(probe.measure(LayerData("relu2", (3, 8, 8), labels), twin))
    assert first["gini"] != pytest.approx(second["gini"])


@pytest.mark.parametrize(("probe", "method", "message"), [
    ("attribution", "NoSuchMethod", "valid: Deconvolution, DeepLift, "),
    ("attribution", "LayerGradCam", "use layer_attribution(method=LayerGradCam)"),
    ("layer_attribution", "Saliency", "use attribution(method=Saliency)"),
    ("attribution", "GradientShap", "needs baselines"),
    ("attribution", "NeuronGradient", "single neuron"),
    ("attribution", 3, "must name a captum.attr class"),
])
def test_bad_method_names_say_what_is_valid(probe, method, message):
    with pytest.raises(BnprobeError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        get_probe(probe, method=method)
    assert "\n" not in str(info.value)


def test_bad_numbers_and_a_missing_layer_module(tiny_split):
    with pytest.raises(BnprobeError, match="samples must be >= 1"):
        get_probe("attribution", samples=0)
    with pytest.raises(BnprobeError, match="n_steps must be an integer"):
        get_probe("attribution", n_steps=2.5)
    model = _tiny_cnn()
    captured = capture(model, (tiny_split.x, tiny_split.y % 3))
    with pytest.raises(BnprobeError, match="no module is known for layer 2"):
        get_probe("layer_attribution").measure(captured["2"], _context(model, tiny_split.x, tiny_split.y % 3))


@pytest.mark.parametrize(("probe", "method", "reason"), [
    ("attribution", "LRP", "needs a propagation rule for every layer"),
    ("attribution", "Lime", "all zeros"),
    ("layer_attribution", "LayerLRP", "fails in captum"),
    ("layer_attribution", "LayerFeatureAblation", "thousands of passes"),
])
def test_methods_that_cannot_give_a_result_here_are_refused_with_the_reason(probe, method, reason):
    with pytest.raises(BnprobeError, match=f"captum's {method} .*{reason}.*; valid: "):
        get_probe(probe, method=method)
