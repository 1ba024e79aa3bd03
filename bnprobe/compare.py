"""Two studies side by side: the same probe metric per layer and variant in A and in B, and B − A.

Two studies share nothing but seed numbers (another model config, epoch count or dataset means
other weights and other data), so B − A is a difference of independent means over seeds with
Welch's t interval (:func:`bnprobe.stats.welch_difference`), ``*`` where it excludes 0.  Only what
both studies have is compared; what one of them lacks is listed, and a pair with no probe layer in
common is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.table import Table

from bnprobe.errors import BnprobeError
from bnprobe.report import (
    ACCURACY_METRICS,
    Metrics,
    check_metrics,
    probe_layers,
    probe_metrics,
    seed_values,
    select_metrics,
)
from bnprobe.results import RUN_PROBE, Results
from bnprobe.stats import CONFIDENCE, WELCH_METHOD, Difference, Summary, summarise, welch_difference


@dataclass(frozen=True)
class ComparedStats:
    """One metric of one probe at one layer for one variant, in study A and in study B."""

    probe: str
    layer: str
    metric: str
    variant: str
    a: Summary | None
    b: Summary | None
    difference: Difference | None
    """B − A with Welch's interval; None when either side has no value."""


def compare_stats(a: Results, b: Results, probe: str, metric: str) -> list[ComparedStats]:
    """A, B and B − A of ``metric`` for every layer (A's forward order) and variant both studies have."""
    b_layers = set(probe_layers(b, probe))
    rows = []
    for layer in (layer for layer in probe_layers(a, probe) if layer in b_layers):
        for variant in (v for v in a.variants if v in b.variants):
            values_a = list(seed_values(a, probe, layer, metric, variant).values())
            values_b = list(seed_values(b, probe, layer, metric, variant).values())
            rows.append(ComparedStats(probe, layer, metric, variant, summarise(values_a), summarise(values_b),
                                      welch_difference(values_b, values_a)))
    return rows


def comparison_table(rows: Sequence[ComparedStats], labels: tuple[str, str] = ("A", "B")) -> Table:
    """A rich table of ``rows``: per layer (named on its first line), a line per variant with A, B and B − A."""
    first = rows[0]
    table = Table(title=f"{first.probe} — {first.metric} (mean ± std over seeds)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  caption=f"{labels[1]} − {labels[0]} [{CONFIDENCE:.0%} CI], {WELCH_METHOD}; "
                          "* the interval excludes 0", caption_justify="left")
    table.add_column("layer", style="cyan", overflow="fold")
    table.add_column("variant", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column(f"{labels[1]} − {labels[0]}", justify="right", no_wrap=True)
    previous = None
    for row in rows:
        d = row.difference
        diff = "—" if d is None else f"[bold]{d}[/bold]" if d.excludes_zero else str(d)
        table.add_row(row.layer if row.layer != previous else "", row.variant,
                      str(row.a) if row.a else "—", str(row.b) if row.b else "—", diff)
        previous = row.layer
    return table


def mismatches(a: Results, b: Results, labels: tuple[str, str] = ("A", "B")) -> list[str]:
    """One line per kind of thing (variants, probes, layers) that only one of the studies has."""
    lines = []
    for kind in ("variants", "probe_keys", "layers"):
        for label, mine, theirs in ((labels[0], a, b), (labels[1], b, a)):
            missing = [x for x in getattr(mine, kind) if x not in getattr(theirs, kind)]
            if missing:
                lines.append(f"{kind.replace('_keys', 's')} only in {label}: {', '.join(missing)}")
    return lines


def render_comparison(a: Results, b: Results, console: Console | None = None, labels: tuple[str, str] = ("A", "B"),
                      metrics: Metrics = None, sources: tuple[str, str] | None = None) -> None:
    """Print, per probe and metric both studies have, the comparison table; then the accuracies.

    ``metrics`` as in :func:`bnprobe.report.render` (default: each probe's key metric); the
    accuracies always show train and test.  ``sources`` (e.g. the two folders) name where each
    study came from in the header.
    """
    console = console or Console()
    check_metrics(a, metrics)
    probes = [p for p in a.probe_keys if p in b.probe_keys]
    if not any(set(probe_layers(a, p)) & set(probe_layers(b, p)) for p in probes):
        raise BnprobeError(f"the studies share no probe layer ({labels[0]}: {a.model}, {', '.join(a.probe_keys)}; "
                           f"{labels[1]}: {b.model}, {', '.join(b.probe_keys)}); compare studies of one model that "
                           "captured the same layers (--layers) with a probe in common (`bnprobe probe OUT --probes`)")
    for label, study, source in zip(labels, (a, b), sources or ("", ""), strict=True):
        console.print(f"[bold]{label}[/bold]: {study.model} on {study.dataset}, {', '.join(study.variants)} × "
                      f"{len(study.seeds)} seeds" + (f" ({source})" if source else ""), highlight=False)
    for line in mismatches(a, b, labels):
        console.print(f"[yellow]{line}[/yellow]", highlight=False)
    for probe in probes:
        shared = [m for m in select_metrics(a, probe, metrics) if m in probe_metrics(b, probe)]
        for metric in shared:
            rows = compare_stats(a, b, probe, metric)
            if rows:
                console.print(comparison_table(rows, labels))
    for metric in ACCURACY_METRICS:
        rows = compare_stats(a, b, RUN_PROBE, metric)
        if rows:
            console.print(comparison_table(rows, labels))
