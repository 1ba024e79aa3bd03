"""In the terminal each probe gets a table of its key metric (or the metrics asked for): layers in
forward order, a column per variant and a ``Δ`` column per non-reference variant, ``*`` where the
interval excludes 0; under it a sparkline per variant shows the trend through depth.  A metric that
is 0 in every run and layer gets one line instead, saying so and what the metric counts; the probe's
notes (sparsity's zero test per layer) follow its tables, one line each.  Each run's own
numbers (accuracies, losses) go through the same path under the pseudo-probe ``run``, and print as
one short line per measure (:data:`RUN_MEASURES`, labelled with what was measured and in which
mode), so they wrap cleanly at 80 columns; each run's flags (:mod:`bnprobe.train._flags`) follow.  A study
with one variant gets one line saying there is nothing to compare, and one whose config asks for
runs that it lacks (an interrupted study) one line naming them and saying that resuming completes
them.  Numbers print with the digits of :func:`bnprobe.report.format_numbers`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from bnprobe._common import INIT_VARIANT, MODEL_SCOPE_LAYER, REFERENCE_VARIANT
from bnprobe._hints import option
from bnprobe._seeds import describe_seeds
from bnprobe.report._numbers import (
    Metrics,
    all_zero_line,
    check_metrics,
    key_metric,
    metric_stats,
    note_lines,
    seed_values,
    select_metrics,
)
from bnprobe.report._results import GIVEN_ACTIVATIONS, RUN_PROBE, Results
from bnprobe.report._spread import spread_lines
from bnprobe.report._stats import (
    CONFIDENCE,
    PAIRED_METHOD,
    MetricStats,
    format_numbers,
    paired_difference,
    summarise,
)

HTML_FORMAT = '<pre style="font-family: Menlo, Consolas, monospace; line-height: 1.25">{code}</pre>'
"""How :func:`recorded_html` wraps what was printed: a fragment for a notebook cell, not a page."""
SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], low: float, high: float) -> str:
    """One block character per value, scaled so ``low`` is ``▁`` and ``high`` is ``█``; ``·`` for a gap."""
    span = high - low
    chars = []
    for value in values:
        if value is None:
            chars.append("·")
        else:
            level = round((value - low) / span * (len(SPARK) - 1)) if span > 0 else len(SPARK) // 2
            chars.append(SPARK[min(max(level, 0), len(SPARK) - 1)])
    return "".join(chars)


def _difference_caption(results: Results, reference: str) -> str | None:
    if len(results.variants) < 2:
        return None  # the report's one line says there is nothing to compare
    if reference not in results.variants:
        return f"no {reference} variant in this study: no differences"
    if len(results.seeds) < 2:
        more = (f"complete the study with {option('resume')}" if results.missing_runs()
                else f"run with {option('seeds', 2)} or more")
        return f"Δ = variant − {reference}, 1 seed: no interval ({more})"
    return f"Δ = variant − {reference} [{CONFIDENCE:.0%} CI], {PAIRED_METHOD}\n* the interval excludes 0"


def probe_table(results: Results, probe: str, metric: str | None = None, reference: str = REFERENCE_VARIANT,
                variants: Sequence[str] | None = None) -> Table | None:
    """A rich table of ``metric`` (default: the key metric) per layer: each variant's mean ± std over
    seeds and, for every variant but ``reference``, its difference from it with the interval.

    ``variants`` limits the columns to those variants and the reference.
    """
    metric = metric or key_metric(results, probe)
    if metric is None:
        return None
    has_reference = reference in results.variants
    shown = [v for v in results.variants if v == reference or variants is None or v in variants]
    seeds = len(results.seeds)
    suffix = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
    table = Table(title=f"{probe} — {metric} ({suffix})", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True,
                  caption=_difference_caption(results, reference), caption_justify="left")
    table.add_column("layer", style="cyan", overflow="fold")
    for variant in shown:
        table.add_column(variant, justify="right", overflow="fold")  # narrow: numbers wrap, never cut
        if has_reference and variant != reference:
            table.add_column(f"Δ {variant}", justify="right", overflow="fold")
    rows = [row for row in metric_stats(results, probe, metric, reference) if row.variant in shown]
    for layer in dict.fromkeys(row.layer for row in rows):
        cells = []
        for row in (r for r in rows if r.layer == layer):
            cells.append(str(row.summary) if row.summary else "—")
            if has_reference and row.variant != reference:
                d = row.difference
                cells.append("—" if d is None else f"[bold]{d}[/bold]" if d.excludes_zero else str(d))
        table.add_row(layer, *cells)
    return table


def titled(table: Table) -> Group:
    """``table`` with its title above it and its caption below it as lines of their own, so that they
    wrap at the console's width, between words, instead of inside a narrow table's columns."""
    title, caption = table.title, table.caption
    table.title = table.caption = None
    lines = [Text.from_markup(str(title), style="italic")] if title else []
    return Group(*lines, table, *([Text.from_markup(str(caption), style="dim")] if caption else []))


def probe_tables(results: Results, probe: str, metric: str, console: Console,
                 reference: str = REFERENCE_VARIANT) -> list[Table]:
    """:func:`probe_table` split by variants into as few tables as fit the console's width."""
    others = [v for v in results.variants if v != reference]
    unbounded = console.options.update_width(10_000)
    per_table = max(len(others), 1)
    while True:
        groups = [others[i:i + per_table] for i in range(0, len(others), per_table)] or [[]]
        tables = [t for group in groups if (t := probe_table(results, probe, metric, reference, group))]
        if per_table == 1 or all(console.measure(t, options=unbounded).maximum <= console.width for t in tables):
            return tables
        per_table -= 1


def depth_profile(rows: Sequence[MetricStats]) -> Table | None:
    """Sparklines of each variant's mean through the layers, on one shared scale; None for one layer."""
    layers = list(dict.fromkeys(row.layer for row in rows))
    means = [row.summary.mean for row in rows if row.summary is not None]
    if len(layers) < 2 or not means:
        return None
    low, high = min(means), max(means)
    grid = Table.grid(padding=(0, 2))
    low_text, high_text = format_numbers([low, high], high - low or high)
    grid.add_row(f"  [dim]depth profile, {layers[0]} → {layers[-1]} "
                 f"(▁ {low_text} … █ {high_text})[/dim]")
    profile = Table.grid(padding=(0, 2))
    for variant in dict.fromkeys(row.variant for row in rows):
        line = [row.summary.mean if row.summary else None for row in rows if row.variant == variant]
        profile.add_row(f"  {variant}", sparkline(line, low, high))
    grid.add_row(profile)
    return grid


RUN_MEASURES = (("train_accuracy", "train acc (eval mode)"),
                ("final_loss", "train loss (last epoch, train mode)"),
                ("test_accuracy", "test acc (eval mode)"),
                ("test_loss", "test loss (eval mode)"))
"""A run's own numbers as the report names them: what was measured, and in which mode.

The train accuracy is measured after training, in eval mode (as the test accuracy); the train loss
is the mean over the last epoch's batches as the optimiser saw them, in train mode."""
BATCH_STATS_LABEL = "test acc (train-mode BN)"
"""The label of the test accuracy with BatchNorm on batch statistics, printed for runs that have one."""


def variant_origin(variant: str, swapped: int | None, reference: str = REFERENCE_VARIANT) -> str:
    """How ``variant``'s model was made, for its heading: as built (``reference``), as built and left
    untrained (``init``), or how many norm layers were ``swapped`` (empty when that is not known)."""
    if variant == reference:
        return "model as built"
    if variant == INIT_VARIANT:
        return "model as built, not trained"
    return f"{swapped} norm layers swapped" if swapped else ""


def run_lines(results: Results, variant: str, reference: str = REFERENCE_VARIANT) -> list[str]:
    """The report's lines for ``variant``'s runs: a heading, one short line per measure (mean ± std
    over seeds, Δ test accuracy from ``reference``; the test accuracy with train-mode BatchNorm where
    it was measured; how many runs had their BatchNorm statistics recomputed), then divergence and
    each run's flags.

    Each line stays under 80 columns for numbers of ordinary size, so no phrase is broken by wrapping.
    """
    runs = [r for r in results.runs if r.variant == variant]
    what = variant_origin(variant, runs[0].swap.get("n_swapped") if runs else None, reference)
    lines = [f"{variant}" + (f" ({what})" if what else "")]
    width = max(*(len(label) for _, label in RUN_MEASURES), len(f"{RUN_MEASURES[2][1]} − {reference}")) + 2
    for metric, label in RUN_MEASURES:
        summary = summarise(getattr(r, metric) for r in runs)
        lines.append(f"  {label:<{width}}{summary if summary else '—'}")
        if metric == "test_accuracy" and summary and variant != reference and reference in results.variants:
            difference = paired_difference(seed_values(results, RUN_PROBE, MODEL_SCOPE_LAYER, metric, variant),
                                           seed_values(results, RUN_PROBE, MODEL_SCOPE_LAYER, metric, reference))
            if difference is not None:
                lines.append(f"  {label + ' − ' + reference:<{width}}{difference}")
    batch_stats = summarise(r.train_mode_test_accuracy for r in runs)
    if batch_stats:
        lines.append(f"  {BATCH_STATS_LABEL:<{width}}{batch_stats}")
    recalibrated = sum(r.recalibrated_bn for r in runs)
    if recalibrated:
        lines.append(f"  BatchNorm statistics recomputed after training in {recalibrated}/{len(runs)} runs")
    diverged = [r for r in runs if r.diverged_at_epoch is not None]
    if diverged:
        lines.append(f"  diverged in {len(diverged)}/{len(runs)} runs "
                     f"(epochs {', '.join(str(r.diverged_at_epoch) for r in diverged)})")
    lines += [f"  ! seed {r.seed} {flag['name']}: {flag['message']}" for r in runs for flag in r.flags]
    return lines


def mode_line(results: Results) -> str | None:
    """One line on how the runs came by their weights -- trained from scratch, fine-tuned from which
    weights, or probed as they are -- or None for activations that were given."""
    config, mode = results.config, results.mode
    if mode is None:
        return None
    epochs = config.get("train", {}).get("epochs")
    epochs = f"{epochs} epoch{'s' * (epochs != 1)}"
    if mode == "scratch":
        return f"from scratch: each seed's variants start from one fresh initialisation and train {epochs}"
    if config.get("weights"):
        return ("probe only, no training: each run's weights were trained elsewhere (weights) and are "
                "evaluated and probed as they are")
    pretrained = config.get("pretrained")
    start = (f"{results.model}'s published weights (local cache)" if pretrained is True
             else f"the pretrained weights in {pretrained}" if pretrained
             else f"the weights in {config['init_weights']}" if config.get("init_weights")
             else "the given module's weights" if config.get("custom_model") else "a fresh initialisation")
    if mode == "fine-tune":
        return f"fine-tuned: every variant is made from {start} and trains {epochs}"
    return f"probe only, no training: the variants of {start} are evaluated and probed as they are"


def comparison_note(results: Results, reference: str = REFERENCE_VARIANT) -> str | None:
    """One line when the study has nothing to compare (a single variant), else None; None too when the
    config asks for more variants, whose runs are missing (:func:`missing_line` says so)."""
    if len(results.variants) != 1 or len(results.config.get("variants") or ()) > 1:
        return None
    return (f"one variant ({results.variants[0]}): nothing to compare; add one, e.g. "
            f"{option('variants', [reference, 'identity'])}")


def missing_line(results: Results, shown: int = 3) -> str | None:
    """One line when the config asks for runs that the results lack (:meth:`Results.missing_runs`, an
    interrupted study): how many, which (``shown`` variants at most), and that resuming completes them."""
    missing = results.missing_runs()
    if not missing:
        return None
    count = sum(len(seeds) for seeds in missing.values())
    expected = len(results.expected_runs())
    which = [f"{variant} seed{'s' * (len(seeds) > 1)} {describe_seeds(seeds)}" for variant, seeds in missing.items()]
    if len(which) > shown:
        which = [*which[:shown], f"{len(which) - shown} more variants"]
    return (f"incomplete study: {count} of {expected} runs missing ({'; '.join(which)}); run it again with "
            f"{option('resume')} to complete them")


def render(results: Results, console: Console | None = None, metrics: Metrics = None,
           reference: str = REFERENCE_VARIANT) -> None:
    """Print a table and depth profile per probe and metric, the run lines (with flags) and any probe failures."""
    console = console or Console()
    check_metrics(results, metrics)
    variants, seeds = len(results.variants), len(results.seeds)
    console.print(f"[bold]{results.model}[/bold] on [bold]{results.dataset}[/bold]: "
                  f"{variants} variant{'s' * (variants != 1)} × {seeds} seed{'s' * (seeds != 1)}, "
                  f"{results.config.get('samples_probed', '?')} probed samples"
                  + (f" in each of {sets} sets per seed" if (sets := results.config.get("sample_sets", 1)) > 1 else ""))
    missing = missing_line(results)
    if missing is not None:
        console.print(Text(missing, style="yellow"))
    mode = mode_line(results)
    if mode is not None:
        console.print(mode, highlight=False, markup=False)
    if results.config.get("recalibrate_bn"):
        console.print("BatchNorm running statistics recomputed over the training data after training "
                      f"({option('recalibrate_bn')}); runs below say where", highlight=False)
    note = comparison_note(results, reference)
    if note is not None:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    for probe in results.probe_keys:
        for metric in select_metrics(results, probe, metrics):
            zero = all_zero_line(results, probe, metric)
            if zero is not None:
                console.print(Text(zero, style="italic"))
                continue
            for table in probe_tables(results, probe, metric, console, reference):
                console.print(titled(table))
            profile = depth_profile(metric_stats(results, probe, metric, reference))
            if profile is not None:
                console.print(profile)
            for line in spread_lines(results, probe, metric, reference):
                console.print(Text(line), overflow="fold")
        for line in note_lines(results, probe):
            console.print(Text(line, style="dim"))
    if results.config.get("source") != GIVEN_ACTIVATIONS:
        console.print(f"[bold]runs[/bold] ({f'mean ± std over {seeds} seeds' if seeds > 1 else '1 seed'})")
        for variant in results.variants:
            for line in run_lines(results, variant, reference):
                indent = 2 + len(line) - len(line.lstrip())  # a wrapped flag message stays under its line
                console.print(Padding(Text(line.lstrip()), (0, 0, 0, indent)))
    else:
        console.print("[bold]runs[/bold]: no training numbers (the activations were given, not trained here)")
    flagged = sum(bool(run.flags) for run in results.runs)
    if flagged:
        console.print(f"[yellow]{flagged} flagged run{'s' * (flagged != 1)}[/yellow] (! above; "
                      "flags in results.json)")
    failures = [(run, f) for run in results.runs for f in run.failures]
    if failures:
        console.print(f"[yellow]{len(failures)} probe failures[/yellow] (details in results.json):")
        for run, failure in failures[:5]:
            console.print(f"  {run.variant} seed {run.seed} {failure['probe']} @ {failure['layer']}: "
                          f"{failure['error']}", highlight=False, markup=False)


def recorded_html(draw: Callable[[Console], None]) -> str:
    """What ``draw`` prints on a console, as an HTML fragment for a notebook cell (``_repr_html_``).

    The console is told it is not Jupyter's: rich's own detection would display each print as a cell
    output of its own, besides the one fragment returned here."""
    console = Console(record=True, file=io.StringIO(), width=100, color_system="truecolor", force_jupyter=False)
    draw(console)
    return console.export_html(inline_styles=True, code_format=HTML_FORMAT)
