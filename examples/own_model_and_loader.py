"""bnprobe from Python with your own nn.Module and DataLoader — no CLI involved.

Runs in about a minute on a laptop CPU:

    python examples/own_model_and_loader.py

It builds a small CNN, makes a no-BatchNorm variant of it, trains both from the same initial weights
on the embedded digits data served by an ordinary DataLoader, captures their activations and compares
sparsity and clustering layer by layer.  Then it does the same in one call with ``run_study``.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnprobe


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def main() -> None:
    data = bnprobe.load_dataset("digits")  # tensors; any (x, y) DataLoader works the same way
    train_loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=64, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
    test_loader = DataLoader(TensorDataset(data.test.x, data.test.y), batch_size=256)
    probe_loader = DataLoader(TensorDataset(data.train.x, data.train.y), batch_size=256)

    torch.manual_seed(0)
    model = SmallCNN()
    probes = bnprobe.build_probes("sparsity,hdbscan(min_cluster_size=10)")
    for variant in ("bn", "identity"):
        net, report = bnprobe.make_variant(model, variant)  # a copy: `model` is left as it is
        trained = bnprobe.train_model(net, train_loader, test_loader,
                                      config=bnprobe.TrainConfig(epochs=3, lr=3e-3), device="cpu")
        captured = bnprobe.capture(net, probe_loader, samples=1000, probes=probes, variant=variant)
        outcome = bnprobe.run_probes(captured, probes)  # the model, samples and variant come from the capture
        print(f"{variant}: {report.n_swapped} layers swapped, test accuracy {trained.test_accuracy:.3f}")
        for layer in captured.names:
            sparsity = outcome.values["sparsity"][layer]["channel_sparsity"]
            ari = outcome.values["hdbscan"][layer]["ari"]
            print(f"  {layer:14s} channel sparsity {sparsity:.3f}   HDBSCAN ARI {ari:.3f}")

    # The same comparison, seeds and all, in one call.  A study holds its data as tensors (every run
    # trains on the same data and is probed on the same samples), so the loaders are read once:
    own_data = bnprobe.Dataset.from_loaders(probe_loader, test_loader, name="digits-from-loaders")
    config = bnprobe.StudyConfig(model="SmallCNN", variants=["bn", "identity"], seeds=2, samples=1000,
                                 train=bnprobe.TrainConfig(epochs=3, lr=3e-3), device="cpu")
    results = bnprobe.run_study(config, model=SmallCNN, dataset=own_data)
    bnprobe.render(results)


if __name__ == "__main__":
    main()
