"""bnprobe's probes on activations read with captum's ``LayerActivation``.

A timm ResNet-10 with BatchNorm and its BatchNorm-free variant (``bnprobe.make_variant``), from the
same initial weights, each trained for a few steps on the embedded digits data; captum reads the
output of each stage, and ``bnprobe.probe_activations`` compares the two:

    python examples/with_captum_layer_activation.py
"""

import torch
from captum.attr import LayerActivation
from torch import nn

import bnprobe

STAGES = ("layer1", "layer2", "layer3", "layer4")


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 10) -> nn.Module:
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        batch = torch.randint(len(x), (64,), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model.eval()


def main() -> bnprobe.Results:
    data = bnprobe.load_dataset("digits")
    probed = data.train.x[:200]
    torch.manual_seed(0)
    base = bnprobe.create_model("resnet10t", num_classes=10, in_chans=1)
    runs = []
    for variant in ("bn", "identity"):
        model, _ = bnprobe.make_variant(base, variant)
        model = train(model, data.train.x, data.train.y)
        layers = [model.get_submodule(name) for name in STAGES]
        with torch.no_grad():
            outputs = LayerActivation(model, layers).attribute(probed)
        runs.append(bnprobe.ActivationRun(dict(zip(STAGES, outputs, strict=True)), variant, seed=0))
    # a stage ends in a ReLU: its outputs are that activation's
    results = bnprobe.probe_activations(runs, data.train.y[:200], "sparsity,cka", activation="relu",
                                        model="resnet10t", dataset="digits")
    bnprobe.render(results)
    return results


if __name__ == "__main__":
    main()
