"""bnprobe's probes on activations traced with TorchLens, from models a bnprobe study trained.

A small study (cnn4 on the embedded digits data, with and without BatchNorm, two seeds, one epoch)
trains the runs; each is opened as a plain ``nn.Module`` with ``bnprobe.load_run``, TorchLens traces
it and keeps every ReLU's output, and ``bnprobe.probe_activations`` compares the traced activations
as the study itself would -- sparsity, cka, and cka_matrix's layer-by-layer heatmap:

    python examples/with_torchlens.py
"""

from pathlib import Path

import torch
import torchlens as tl
from torch import nn

import bnprobe
from bnprobe.study import StudyConfig
from bnprobe.train import TrainConfig

OUT = Path("runs/with-torchlens")


def relu_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU's output as TorchLens saved it, named by its module address (``features.2``)."""
    trace = tl.trace(model, x, save=tl.func("relu"))
    return {name: trace[name].out for name, module in model.named_modules() if isinstance(module, nn.ReLU)}


def main() -> bnprobe.Results:
    config = StudyConfig(model="cnn4", dataset="digits", variants=("bn", "identity"), seeds=2, probes=["sparsity"],
                         samples=200, train=TrainConfig(epochs=1), device="cpu")
    bnprobe.run_study(config, out=OUT, overwrite=True)
    digits = bnprobe.load_dataset("digits")
    probed_x, probed_y = digits.train.x[:300], digits.train.y[:300]
    runs = [bnprobe.ActivationRun(relu_outputs(bnprobe.load_run(OUT, variant, seed), probed_x), variant, seed)
            for variant in config.variants for seed in range(config.seeds)]
    results = bnprobe.probe_activations(runs, probed_y, "sparsity,cka,cka_matrix", activation="relu",
                                        model="cnn4", dataset="digits")
    bnprobe.render(results)
    bnprobe.heatmap(results, "cka_matrix").savefig(OUT / "torchlens-cka-heatmap.png")
    return results


if __name__ == "__main__":
    main()
