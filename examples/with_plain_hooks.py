"""bnprobe's probes on activations you captured yourself, with plain forward hooks.

The same goes for TorchLens, nnsight or any other tool: what bnprobe needs is ``{layer: tensor}`` per
run, over the same samples, and their labels.  Here two small CNNs -- one with BatchNorm, one without
-- are trained briefly under two seeds each on the embedded digits data, their ReLU outputs are read
by hooks, and ``bnprobe.probe_activations`` compares them as a study would:

    python examples/with_plain_hooks.py
"""

import torch
from torch import nn

import bnprobe


def small_cnn(norm: bool) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), *([nn.BatchNorm2d(cout)] if norm else []), nn.ReLU()]

    return nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 30) -> nn.Module:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = torch.randint(len(x), (64,), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return model.eval()


def relu_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU's output, named by its module path."""
    seen = {}
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
             for name, module in model.named_modules() if isinstance(module, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def main() -> bnprobe.Results:
    data = bnprobe.load_dataset("digits")
    probed_x, probed_y = data.train.x[:300], data.train.y[:300]
    runs = []
    for seed in (0, 1):
        for variant, norm in (("bn", True), ("identity", False)):
            torch.manual_seed(seed)
            model = train(small_cnn(norm), data.train.x, data.train.y)
            layers = relu_outputs(model, probed_x)
            # the no-BN model has no BatchNorm modules, so its ReLUs sit at other indices: name by position
            runs.append(bnprobe.ActivationRun({f"relu{k}": out for k, out in enumerate(layers.values())},
                                              variant, seed))
    results = bnprobe.probe_activations(runs, probed_y, "sparsity,hdbscan,cka", activation="relu",
                                        model="small_cnn", dataset="digits")
    bnprobe.render(results)
    return results


if __name__ == "__main__":
    main()
