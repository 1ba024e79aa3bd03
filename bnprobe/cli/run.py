"""``bnprobe run MODEL``: a whole study from the command line."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.probes.base import split_probe_list
from bnprobe.progress import RichListener
from bnprobe.report import render
from bnprobe.study import StudyConfig, run_study
from bnprobe.train import TrainConfig


def default_out(model: str) -> Path:
    """``runs/<model>-<timestamp>``, with characters unsafe in paths replaced."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", model)
    return Path("runs") / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


@cli.command()
@click.argument("model")
@click.option("--dataset", default="digits", show_default=True, help="digits (embedded) or another dataset.")
@click.option("--data-root", default=None, help="Folder holding the dataset's files.")
@click.option("--variants", default="bn,identity,groupnorm", show_default=True,
              help="Comma list: bn (as built) and norm targets.")
@click.option("--epochs", default=5, show_default=True, type=int)
@click.option("--seeds", default=1, show_default=True, type=int, help="How many seeds (0, 1, ...).")
@click.option("--samples", default=5000, show_default=True, type=int,
              help="Training samples to probe (capped at the split's size).")
@click.option("--probes", default="sparsity,hdbscan", show_default=True,
              help="Comma list of probes, with parameters: 'hdbscan(dims=30)'.")
@click.option("--layers", default="act", show_default=True, help="Layer kinds (act, conv, norm) or globs.")
@click.option("--spatial", default="flatten", show_default=True,
              help="Per-sample vectors: flatten, channel_mean or pool:K.")
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--optimizer", default="adamw", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/<model>-<timestamp>].")
@click.option("--quiet", is_flag=True, help="No progress, only the final report.")
def run(model: str, dataset: str, data_root: str | None, variants: str, epochs: int, seeds: int,
        samples: int, probes: str, layers: str, spatial: str, batch_size: int, lr: float, optimizer: str,
        device: str, out: str | None, quiet: bool) -> None:
    """Train MODEL with and without BatchNorm and compare its hidden representations.

    MODEL is a timm model name (resnet18), a torchvision one with a tv: prefix (tv:resnet18), or a
    bnprobe built-in (cnn4, vgg16_cifar).
    """
    config = StudyConfig(
        model=model, dataset=dataset, data_root=data_root,
        variants=[v.strip() for v in variants.split(",") if v.strip()], seeds=seeds, samples=samples,
        probes=split_probe_list(probes), device=device, layers=layers, spatial=spatial,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer))
    out_dir = Path(out) if out else default_out(model)
    console = Console()
    with RichListener(quiet=quiet) as listener:
        results = run_study(config, out=out_dir, listener=listener)
    render(results, console)
    console.print(f"results: {out_dir / 'results.json'}", highlight=False)
