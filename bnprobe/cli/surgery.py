"""``bnprobe surgery MODEL --to TARGET``: the swap plan, without training anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from bnprobe.cli import cli

if TYPE_CHECKING:
    from bnprobe.surgery._swap import SwapReport


def swap_table(report: SwapReport, model: str) -> Table:
    """One row per swapped layer (what became of its BatchNorm's affine init among the rest), and the totals
    as the last row."""
    table = Table(title=f"{model}: BatchNorm → {report.target}", title_justify="left")
    for column, justify in (("module", "left"), ("old type", "left"), ("new type", "left"),
                            ("params before", "right"), ("params after", "right"),
                            ("activation kept", "left"), ("BN affine init", "left"), ("note", "left")):
        table.add_column(column, justify=justify)
    for r in report.records:
        table.add_row(r.path, r.old_type, r.new_type, f"{r.params_before:,}", f"{r.params_after:,}",
                      r.activation or "—", f"{r.affine_init} → {r.affine}", r.note)
    table.add_section()
    table.add_row(f"total: {report.n_swapped} layers", "", "", f"{report.params_before:,}",
                  f"{report.params_after:,}", "", "", f"parameters {report.param_delta:+,}")
    return table


@cli.command("surgery")
@click.argument("model")
@click.option("--to", "target", required=True, help="identity, groupnorm[:G], layernorm, instancenorm, frozen, "
              "fold; add +bias (identity only) for zero-initialised biases where BatchNorm made them redundant, "
              "+skipinit for zero-initialised residual branches.")
@click.option("--dataset", default="digits", show_default=True,
              help="Sets the class and channel counts the model is built for.")
@click.option("--data-root", default=None, help="Folder holding the dataset's files.")
@click.option("--init-weights", "--checkpoint", "init_weights", default=None, type=click.Path(dir_okay=False),
              help="Weights to load before the swap (a state_dict or a timm checkpoint; --checkpoint: its old name, "
                   "deprecated).")
def surgery_command(model: str, target: str, dataset: str, data_root: str | None, init_weights: str | None) -> None:
    """Show what swapping MODEL's BatchNorm layers for TARGET would change."""
    from bnprobe.data._loaders import load_dataset
    from bnprobe.models._factory import create_model, input_channels
    from bnprobe.models._weights import load_checkpoint
    from bnprobe.surgery._swap import swap_norms

    data = load_dataset(dataset, data_root=data_root)
    net = create_model(model, num_classes=data.num_classes, in_chans=input_channels(model, data.channels),
                       img_size=data.image_size)
    if init_weights:
        load_checkpoint(net, init_weights)
    _, report = swap_norms(net, target)
    console = Console()
    console.print(swap_table(report, model))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
