"""``bnprobe surgery MODEL --to TARGET``: the swap plan, without training anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from bnprobe.cli import cli

if TYPE_CHECKING:
    from bnprobe.surgery._swap import SwapReport


def _shown_type(new_type: str, settings: str) -> str:
    """``GroupNorm(32, 64)``: the new norm with its positional settings (groups, channels), keywords left out."""
    positional = [part for part in settings.split(", ") if "=" not in part] if settings else []
    return f"{new_type}({', '.join(positional)})" if positional else new_type


def swap_table(report: SwapReport, model: str) -> Table:
    """One row per swapped layer (its new norm with that norm's settings, what became of its BatchNorm's affine
    init among the rest), and the totals as the last row.

    Every column folds rather than cuts, so in a narrow terminal or a pipe each module's whole name and each
    number still shows.  To leave them room, a column with one value in every row (the old type, an empty
    note) is said once in the caption instead.
    """
    records = report.records
    columns = [("module", "left", [r.path for r in records], f"total: {report.n_swapped} layers"),
               ("old type", "left", [r.old_type for r in records], ""),
               ("new type", "left", [_shown_type(r.new_type, r.settings) for r in records], ""),
               ("params before", "right", [f"{r.params_before:,}" for r in records], f"{report.params_before:,}"),
               ("params after", "right", [f"{r.params_after:,}" for r in records], f"{report.params_after:,}"),
               ("activation kept", "left", [r.activation or "—" for r in records], ""),
               ("BN affine init", "left", [f"{r.affine_init} → {r.affine}" for r in records], ""),
               ("note", "left", [r.note for r in records], f"parameters {report.param_delta:+,}")]
    same = [(name, values[0]) for name, _, values, _ in columns[1:]
            if len(records) > 1 and len(set(values)) == 1 and name not in ("new type", "params after")]
    dropped = {name for name, _ in same}
    caption = "; ".join(f"{name}: {value or 'none'} in every row" for name, value in same) or None
    table = Table(title=f"{model}: BatchNorm → {report.target}", title_justify="left", caption=caption,
                  caption_justify="left")
    kept = [column for column in columns if column[0] not in dropped]
    for name, justify, _, _ in kept:
        table.add_column(name, justify=justify, overflow="fold")
    for row in zip(*(values for _, _, values, _ in kept), strict=True):
        table.add_row(*row)
    table.add_section()
    table.add_row(*(total for _, _, _, total in kept))
    if "note" in dropped:
        table.caption = f"{caption}; parameters {report.param_delta:+,}"
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
