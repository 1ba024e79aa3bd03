"""``bnprobe reproduce PRESET --dataset NAME``: a published study in one command, ending in verdicts.

The preset (:mod:`bnprobe.reproduce._presets`) sets everything; every option below left out keeps the preset's
value, and one given replaces it.  The per-variant options (``--lr``...) read as in ``bnprobe run``.
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from bnprobe._common import CHECKPOINT_MODES, HEADS, REFERENCE_VARIANT
from bnprobe.cli import cli
from bnprobe.cli._interrupt import resumable
from bnprobe.cli._scale import executor_options, scale_settings
from bnprobe.cli.run import CHECKPOINTS_HELP, PER_VARIANT_HELP, RECALIBRATE_HELP, default_out, train_settings
from bnprobe.params import split_list

if TYPE_CHECKING:
    from bnprobe.reproduce import PresetStudy, Reproduction, RobustnessResult, Verdict

KEEP = "[default: the preset's]"


def has_bare_value(text: str) -> bool:
    """Whether a per-variant option (``0.01,bn=0.1``) holds a value for every variant, not only ``VARIANT=``."""
    return any(item.strip() and "=" not in item for item in text.split(","))


def per_variant_changes(variants: list[str], options: dict[str, str | None]) -> tuple[dict, dict[str, dict]]:
    """Training changes and per-variant values from the per-variant options that were given.

    Parsed by :func:`bnprobe.cli.run.train_settings` (so ``--agc 0.01`` spares ``bn`` here too); only a
    setting given a bare value changes it for every variant.
    """
    given = {name: text for name, text in options.items() if text is not None}
    shared, overrides = train_settings(variants, given)
    return {name: shared[name] for name, text in given.items() if has_bare_value(text)}, overrides


def recipe_lines(study: PresetStudy) -> list[str]:
    """What the study will do, in two lines: the data and probes, then the training recipe."""
    from bnprobe._seeds import describe_seeds
    from bnprobe.reproduce._presets import model_label

    config, train = study.config, study.config.train
    subsets = ", ".join(f"{split} subset {n}" for split, n in (("train", study.train_subset),
                                                                ("test", study.test_subset)) if n)
    model = model_label(config.model, study.model_kwargs)
    momentum = f" momentum {train.momentum} (Nesterov)" if train.optimizer == "sgd" and train.momentum else ""
    own = "; ".join(f"{variant}: {', '.join(f'{k} {v}' for k, v in values.items())}"
                    for variant, values in config.overrides.items() if values)
    seeds = f"{config.seeds} seeds" + (f" ({describe_seeds(config.seed_range)})" if config.first_seed else "")
    sets = f" in each of {config.sample_sets} disjoint sets per seed" if config.sample_sets > 1 else ""
    return [f"{model}, variants {', '.join(config.variants)}, {seeds}, {config.samples} probed training "
            f"samples{sets}, layers {config.layers}, probes {', '.join(config.probes)}"
            + (f"; {subsets}" if subsets else ""),
            f"{train.optimizer} lr {train.lr}{momentum}, weight decay {train.weight_decay}, {train.schedule} schedule, "
            f"batch {train.batch_size}, {train.epochs} epoch{'s' * (train.epochs != 1)}, "
            f"augmentation {'on' if config.augment else 'off'}"
            + (", BatchNorm statistics recomputed after training" if config.recalibrate_bn else "")
            + (f"; {own}" if own else "")]


def render_reproduction(reproduction: Reproduction, console: Console) -> None:
    """The study's tables and accuracies, then the generalisation gaps and the verdicts."""
    from bnprobe.report import render
    from bnprobe.report._stats import CONFIDENCE

    results = reproduction.results
    render(results, console, metrics=reproduction.shown_metrics())
    seeds = len(results.seeds)
    console.print(f"[bold]generalisation gap[/bold] (train − test accuracy, "
                  f"{f'mean ± std over {seeds} seeds' if seeds > 1 else '1 seed'})")
    for variant, gap in reproduction.gaps.items():
        difference = reproduction.gap_differences.get(variant)
        note = f" (Δ {difference})" if difference else ""
        console.print(f"  {variant}: {gap if gap else '—'}{note}", highlight=False)
    if any(d is not None and d.low is not None for d in reproduction.gap_differences.values()):
        console.print(f"  Δ = gap − {REFERENCE_VARIANT}'s, paired by seed [{CONFIDENCE:.0%} CI]", markup=False)
    variant = reproduction.study.compared_variant
    console.print(f"[bold]verdicts[/bold] ({REFERENCE_VARIANT} against {variant}; the tests and their "
                  "correction for many comparisons: docs/reproducing.md)")
    flagged = reproduction.flagged_runs
    if flagged:
        runs = "; ".join(f"{r['variant']} seed {r['seed']}: {', '.join(r['flags'])}" for r in flagged)
        console.print(f"  caution: they rest on {len(flagged)} flagged run{'s' if len(flagged) > 1 else ''} ({runs}); "
                      "see the flags above", markup=False, highlight=False)
    for verdict in reproduction.verdicts:
        for line in verdict_lines(verdict, min(console.width, 80)):
            console.print(line, markup=False, highlight=False)


def verdict_lines(verdict: Verdict, width: int = 80) -> list[str]:
    """A verdict as ``(key) finding: LABEL`` and its rule and evidence, each folded to ``width``."""
    from bnprobe.reproduce._presets import VERDICT_LABELS

    lines = [f"  ({verdict.key}) {verdict.finding}: {VERDICT_LABELS[verdict.holds]}"]
    parts = [("rule", verdict.rule), ("evidence", verdict.evidence)]
    if verdict.needed is not None:
        parts.append(("seeds", verdict.needed.line()))
    for name, text in parts:
        lines += textwrap.wrap(f"{name}: {text}", width, initial_indent=" " * 6, subsequent_indent=" " * 8,
                               break_on_hyphens=False)
    return lines


ROBUSTNESS_MARKS: dict[bool | None, str] = {True: "yes", False: "no", None: "?"}
"""How :func:`render_robustness` shows a verdict's outcome in one setting."""


def render_robustness(robust: RobustnessResult, console: Console) -> None:
    """One table: a row per verdict, a column per grid setting, and in how many settings it holds."""
    from bnprobe.reproduce._presets import VERDICT_LABELS

    names = "/".join(robust.grid)
    console.print(f"[bold]robustness[/bold] ({robust.probe} re-run, nothing retrained); columns {names}",
                  highlight=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    table.add_column("verdict", overflow="fold")
    for setting in robust.settings:
        label = "/".join(str(value) for value in setting.params.values())
        table.add_column(label + "*" * setting.study, justify="center", overflow="fold")
    table.add_column("holds", justify="right", overflow="fold")
    held = VERDICT_LABELS[True]
    for i, (finding, counts) in enumerate(zip(robust.findings(), robust.counts(), strict=True)):
        verdict = robust.settings[0].verdicts[i]
        key = getattr(verdict, "key", None) or "abcdefgh"[i]
        constant = "" if verdict.numbers.get("probe") == robust.probe else " (reads no clustering number)"
        table.add_row(f"({key}) {finding}{constant}", *(ROBUSTNESS_MARKS[s.verdicts[i].holds] for s in robust.settings),
                      f"{counts[held]} of {len(robust.settings)}")
    console.print(table)
    console.print(f"yes: {held}, no: {VERDICT_LABELS[False]}, ?: {VERDICT_LABELS[None]}; "
                  "*: the study's own setting", markup=False, highlight=False)
    console.print("only the clustering numbers differ between columns, so a verdict that reads none is the same "
                  "in every column by construction", markup=False, highlight=False)


def list_lines() -> list[str]:
    """One block per preset: its name and paper, then each dataset with its model."""
    from bnprobe.reproduce._presets import PRESETS

    lines = []
    for name, preset in sorted(PRESETS.items()):
        lines.append(f"{name}: {preset.paper}")
        for dataset in preset.datasets:
            recipe = preset.recipe(dataset)
            borrowed = f", the {preset.aliases[dataset]} recipe" if dataset in preset.aliases else ""
            lines.append(f"  --dataset {dataset}: {recipe.model}{borrowed}")
    return lines


@cli.command()
@click.argument("preset", required=False)
@click.option("--list", "list_", is_flag=True, help="List the presets and their datasets, then exit.")
@click.option("--dataset", default=None, help="Which of the preset's setups, e.g. mnist, fashion-mnist, cifar10.")
@click.option("--quick", is_flag=True,
              help="The small version: a training subset, fewer epochs, seeds and samples (docs/reproducing.md).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder [default: runs/<preset>-<dataset>-<timestamp>].")
@click.option("--device", default=None, help="auto, cpu or cuda [default: auto].")
@click.option("--data-root", default=None, help="Folder with the dataset's files [default: usual places].")
@click.option("--model", default=None, help=f"Model name (as in bnprobe run). {KEEP}")
@click.option("--width", default=None, type=int, help=f"cnn4's first-stage width (the second stage: twice it). {KEEP}")
@click.option("--head", default=None, type=click.Choice(HEADS), help=f"cnn4's classifier head. {KEEP}")
@click.option("--variants", default=None, help=f"Comma list with bn and at least one BN-free variant. {KEEP}")
@click.option("--seeds", default=None, help=f"How many seeds, or a range of them (4-7). {KEEP}")
@click.option("--samples", default=None, type=int, help=f"Training samples to probe. {KEEP}")
@click.option("--sample-sets", default=None, type=int, help=f"Disjoint sets of --samples probed per seed. {KEEP}")
@click.option("--probes", default=None, help=f"Comma list of probes. {KEEP}")
@click.option("--layers", default=None, help=f"Layer kinds or globs. {KEEP}")
@click.option("--spatial", default=None, help=f"flatten, channel_mean or pool:K. {KEEP}")
@click.option("--train-subset", default=None, type=int, help=f"Training images kept; 0 for all. {KEEP}")
@click.option("--test-subset", default=None, type=int, help=f"Test images kept; 0 for all. {KEEP}")
@click.option("--epochs", default=None, type=int, help=KEEP)
@click.option("--batch-size", default=None, type=int, help=KEEP)
@click.option("--optimizer", default=None, help=f"sgd, adam or adamw. {KEEP}")
@click.option("--schedule", default=None, help=f"cosine, onecycle or constant. {KEEP}")
@click.option("--lr", default=None, help=f"{PER_VARIANT_HELP} {KEEP}")
@click.option("--momentum", default=None, help=f"SGD momentum (per variant too). {KEEP}")
@click.option("--weight-decay", default=None, help=f"Per variant too. {KEEP}")
@click.option("--label-smoothing", default=None, help=f"Per variant too. {KEEP}")
@click.option("--grad-clip", default=None, help=f"Max global gradient norm (per variant too). {KEEP}")
@click.option("--agc", default=None, help=f"Adaptive gradient clipping; a bare value spares bn. {KEEP}")
@click.option("--precision", default=None, help=f"auto, fp32, bf16 or fp16. {KEEP}")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--augment/--no-augment", default=None, help=f"The dataset's augmentation. {KEEP}")
@click.option("--recalibrate-bn/--no-recalibrate-bn", default=None, help=f"{RECALIBRATE_HELP} {KEEP}")
@click.option("--resume", is_flag=True, help="Continue the study in --out: keep finished runs, resume the last.")
@click.option("--overwrite", is_flag=True,
              help="Replace the study in --out: remove its results, plots, checkpoints and caches first "
                   "(other files stay).")
@click.option("--checkpoints", "keep", type=click.Choice(CHECKPOINT_MODES), default=None,
              help=f"{CHECKPOINTS_HELP} [default: final]")
@click.option("--robustness", is_flag=True,
              help="Then re-probe the runs (no training) under a grid of HDBSCAN settings and count in how many "
                   "each verdict holds (docs/reproducing.md).")
@click.option("--robustness-grid", default=None,
              help="The grid, e.g. 'dims=[20,50,100],min_cluster_size=[10,50]' (implies --robustness) "
                   "[default: that one].")
@executor_options
@click.option("--quiet", is_flag=True, help="No progress, only the final report.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary and verdicts as one JSON object on stdout, the rest on stderr (docs/results.md).")
@click.option("--verbose", is_flag=True,
              help="Also print internal notes: how training was planned (fused or not, and why).")
def reproduce(preset: str | None, list_: bool, dataset: str | None, quick: bool, out: str | None, device: str | None,
              data_root: str | None, model: str | None, width: int | None, head: str | None, variants: str | None,
              seeds: str | None,
              samples: int | None, sample_sets: int | None, probes: str | None, layers: str | None, spatial: str | None,
              train_subset: int | None, test_subset: int | None, epochs: int | None, batch_size: int | None,
              optimizer: str | None, schedule: str | None, lr: str | None, momentum: str | None,
              weight_decay: str | None, label_smoothing: str | None, grad_clip: str | None, agc: str | None,
              precision: str | None, compile_: bool, augment: bool | None, recalibrate_bn: bool | None,
              resume: bool, overwrite: bool, keep: str | None, robustness: bool, robustness_grid: str | None,
              quiet: bool, as_json: bool, verbose: bool, **scale: Any) -> None:
    """Reproduce a published study (PRESET, e.g. potgieter2025) and end with a verdict on each finding.

    Prints the paper's comparisons -- per-layer sparsity and clustering over the seeds, accuracy and
    the generalisation gap -- and writes results.json, results.csv, plots/ and verdicts.json to --out.
    With --robustness (on a finished study: add --resume, nothing trains) the runs are then re-probed
    under a grid of HDBSCAN settings, and a table shows in how many each verdict holds (robustness.json).
    """
    from bnprobe.cli._progress import RichListener
    from bnprobe.probes import split_probe_list
    from bnprobe.reproduce._presets import Changes, build_study, get_preset
    from bnprobe.reproduce._presets import reproduce as run_reproduction
    from bnprobe.reproduce._robustness import (
        DEFAULT_GRID,
        ROBUSTNESS_DIR,
        ROBUSTNESS_FILE,
        check_robustness,
        parse_grid,
    )
    from bnprobe.reproduce._robustness import robustness as run_robustness
    from bnprobe.study._dir import check_out_dir

    if list_:
        click.echo("\n".join(list_lines()))
        return
    variant_list = split_list(variants) if variants else None
    shared, overrides = per_variant_changes(variant_list or list(get_preset(preset).variants), {
        "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
        "grad_clip": grad_clip, "agc": agc})
    study_changes = {"model": model, "variants": variant_list, "seeds": seeds, "samples": samples,
                     "sample_sets": sample_sets,
                     "probes": split_probe_list(probes) if probes else None, "layers": layers, "spatial": spatial,
                     "device": device, "data_root": data_root, "augment": augment, "checkpoints": keep,
                     "recalibrate_bn": recalibrate_bn, **scale_settings(scale)}
    train_changes = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "schedule": schedule,
                     "precision": precision, "compile": compile_ or None}
    changes = Changes(study={k: v for k, v in study_changes.items() if v is not None},
                      train={**{k: v for k, v in train_changes.items() if v is not None}, **shared},
                      per_variant=overrides, train_subset=train_subset, test_subset=test_subset,
                      model_kwargs={k: v for k, v in (("width", width), ("head", head)) if v is not None})
    study = build_study(preset, dataset, quick=quick, changes=changes)
    grid = parse_grid(robustness_grid) if robustness_grid else DEFAULT_GRID if robustness else None
    if grid is not None:
        check_robustness(study, grid)  # a bad grid is one line before anything trains
    out_dir = out or default_out(f"{study.preset}-{dataset}{'-quick' if quick else ''}")
    check_out_dir(out_dir, resume=resume, overwrite=overwrite)  # before the recipe is printed: one line
    console = Console(stderr=as_json)
    console.print(f"[bold]{study.preset}[/bold] on [bold]{dataset}[/bold]{' (quick)' if quick else ''}: "
                  f"{get_preset(preset).paper}", highlight=False)
    for line in recipe_lines(study):
        console.print(f"  {line}", highlight=False, markup=False)
    with resumable(out_dir), RichListener(quiet=quiet, verbose=verbose) as listener:
        reproduction = run_reproduction(study, out=out_dir, listener=listener, resume=resume, overwrite=overwrite)
        robust = run_robustness(study, out_dir, grid=grid, listener=listener) if grid is not None else None
    if as_json:
        click.echo(json.dumps({**reproduction.summary_json(), **({"robustness": robust.to_dict()} if robust else {})},
                              indent=2, allow_nan=False))
    else:
        render_reproduction(reproduction, console)
        if robust is not None:
            render_robustness(robust, console)
    console.print(f"results: {out_dir}/results.json, results.csv, history.csv, plots/, verdicts.json"
                  + (f", {ROBUSTNESS_FILE}, {ROBUSTNESS_DIR}/" if robust else ""), highlight=False)

