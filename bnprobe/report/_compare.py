"""Two studies side by side: the same probe metric per layer and variant in A and in B, and B − A.

Two studies share nothing but seed numbers (another model config, epoch count or dataset means
other weights and other data), so B − A is a difference of independent means over seeds with
Welch's t interval (:func:`bnprobe.report._stats.welch_difference`), ``*`` where it excludes 0.  Only what
both studies have is compared -- for two models, the accuracies and the model-scope probes (filed
under the layer ``model``), and any layer names they share; what one of them lacks is listed, and so
is every config field in which they differ (:func:`config_lines`).  A pair with no variant in common
has nothing to compare and is an error.  :func:`comparison_json` is the same as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bnprobe._hints import option
from bnprobe.errors import BnprobeError
from bnprobe.report._numbers import (
    ACCURACY_METRICS,
    Metrics,
    check_metrics,
    probe_layers,
    probe_metrics,
    seed_values,
    select_metrics,
)
from bnprobe.report._results import RUN_PROBE, Results
from bnprobe.report._stats import CONFIDENCE, WELCH_METHOD, Difference, Summary, summarise, welch_difference
from bnprobe.report._terminal import RUN_MEASURES, recorded_html, titled
from bnprobe.train._state import config_differences


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
    what = dict(RUN_MEASURES).get(first.metric, first.metric) if first.probe == RUN_PROBE else \
        f"{first.probe} — {first.metric}"
    caption = f"{labels[1]} − {labels[0]} [{CONFIDENCE:.0%} CI], {WELCH_METHOD}\n* the interval excludes 0"
    if not any(row.difference is not None and row.difference.low is not None for row in rows):
        caption = (f"{labels[1]} − {labels[0]} of the means: no interval, as Welch's needs 2 seeds or more in each "
                   f"study (run with {option('seeds', 2)} or more)")
    table = Table(title=f"{what} (mean ± std over seeds)", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  caption=caption, caption_justify="left")
    table.add_column("layer", style="cyan", overflow="fold")  # narrow: names and numbers wrap, never cut
    table.add_column("variant", overflow="fold")
    for label in labels:
        table.add_column(label, justify="right", overflow="fold")
    table.add_column(f"{labels[1]} − {labels[0]}", justify="right", overflow="fold")
    previous = None
    for row in rows:
        d = row.difference
        diff = "—" if d is None else f"[bold]{d}[/bold]" if d.excludes_zero else str(d)
        table.add_row(row.layer if row.layer != previous else "", row.variant,
                      str(row.a) if row.a else "—", str(row.b) if row.b else "—", diff)
        previous = row.layer
    return table


def only_in_one(a: Results, b: Results) -> dict[str, dict[str, list[str]]]:
    """``{kind: {"a": [...], "b": [...]}}``: the variants, probes and layers that only A or only B has."""
    return {kind.replace("_keys", "s"): {side: [x for x in getattr(mine, kind) if x not in getattr(theirs, kind)]
                                         for side, mine, theirs in (("a", a, b), ("b", b, a))}
            for kind in ("variants", "probe_keys", "layers")}


def mismatches(a: Results, b: Results, labels: tuple[str, str] = ("A", "B")) -> list[str]:
    """One line per kind of thing (variants, probes, layers) that only one of the studies has."""
    return [f"{kind} only in {label}: {', '.join(missing)}"
            for kind, sides in only_in_one(a, b).items()
            for label, missing in zip(labels, sides.values(), strict=True) if missing]


def study_config(results: Results) -> dict[str, Any]:
    """What :func:`config_differences` compares of a study: its config, with the model and dataset."""
    return {"model": results.model, "dataset": results.dataset, **results.config}


def config_lines(a: Results, b: Results) -> list[str]:
    """One line per config field that differs, dotted: ``model: cnn4 vs resnet18``, ``train.epochs: 5 vs 10``."""
    return [f"{field}: {_value(old)} vs {_value(new)}"
            for field, old, new in config_differences(study_config(a), study_config(b))]


def _value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def shared_probes(a: Results, b: Results) -> list[str]:
    """The probe keys both studies have, in A's order."""
    return [p for p in a.probe_keys if p in b.probe_keys]


def _check_shared(a: Results, b: Results, labels: tuple[str, str]) -> None:
    if not any(v in b.variants for v in a.variants):
        raise BnprobeError(f"the studies share no variant ({labels[0]}: {', '.join(a.variants)}; {labels[1]}: "
                           f"{', '.join(b.variants)}); compare studies that ran at least one variant in common")


def comparison_json(a: Results, b: Results, sources: tuple[str, str] | None = None) -> dict:
    """The comparison as plain JSON-safe data (what ``bnprobe compare --json`` prints).

    ``probes``: ``{PROBE: {LAYER: {METRIC: {VARIANT: {"a", "b", "difference"}}}}}`` for every metric
    both studies have at every shared layer and variant (the pseudo-probe ``run`` included), where
    ``a`` and ``b`` are ``{"mean", "std", "n"}`` (as in :func:`bnprobe.report.summary_json`) and
    ``difference`` is B − A, ``{"estimate", "low", "high", "n", "excludes_zero"}`` or null.
    """
    _check_shared(a, b, ("A", "B"))
    probes: dict = {}
    for probe in [RUN_PROBE, *shared_probes(a, b)]:
        for metric in (m for m in probe_metrics(a, probe) if m in probe_metrics(b, probe)):
            for row in compare_stats(a, b, probe, metric):
                probes.setdefault(probe, {}).setdefault(row.layer, {}).setdefault(metric, {})[row.variant] = {
                    side: s.to_dict() if s else {"mean": None, "std": None, "n": 0}
                    for side, s in (("a", row.a), ("b", row.b))} | {
                    "difference": row.difference.to_dict() if row.difference else None}

    def study(results: Results, source: str) -> dict:
        return {"source": source, "model": results.model, "dataset": results.dataset,
                "variants": results.variants, "seeds": results.seeds, "layers": results.layers,
                "probes": results.probe_keys}

    return {"schema_version": a.schema_version,
            **{label: study(results, source) for label, results, source in
               zip("ab", (a, b), sources or (None, None), strict=True)},
            "config_differences": [{"field": field, "a": old, "b": new} for field, old, new in
                                   config_differences(study_config(a), study_config(b))],
            "only_in_one": only_in_one(a, b), "confidence": CONFIDENCE, "interval_method": WELCH_METHOD,
            "probes": probes}


def render_comparison(a: Results, b: Results, console: Console | None = None, labels: tuple[str, str] = ("A", "B"),
                      metrics: Metrics = None, sources: tuple[str, str] | None = None) -> None:
    """Print the config differences, then per probe and metric both studies have the comparison table;
    then the accuracies.

    ``metrics`` as in :func:`bnprobe.report.render` (default: each probe's key metric); the
    accuracies always show train and test.  ``sources`` (e.g. the two folders) name where each
    study came from in the header.
    """
    console = console or Console()
    check_metrics(a, metrics)
    _check_shared(a, b, labels)
    for label, study, source in zip(labels, (a, b), sources or ("", ""), strict=True):
        console.print(f"[bold]{label}[/bold]: {study.model} on {study.dataset}, {', '.join(study.variants)} × "
                      f"{len(study.seeds)} seed{'s' * (len(study.seeds) != 1)}" + (f" ({source})" if source else ""),
                      highlight=False)
    differences = config_lines(a, b)
    console.print(f"[bold]config differences[/bold] ({labels[0]} vs {labels[1]}):" if differences
                  else "same config", highlight=False)
    for line in differences:
        console.print(f"  {line}", highlight=False, markup=False)
    for line in mismatches(a, b, labels):
        console.print(f"[yellow]{line}[/yellow]", highlight=False)
    shown = [(probe, metric) for probe in shared_probes(a, b)
             for metric in select_metrics(a, probe, metrics) if metric in probe_metrics(b, probe)]
    for probe, metric in [*shown, *((RUN_PROBE, metric) for metric in ACCURACY_METRICS)]:
        rows = compare_stats(a, b, probe, metric)
        if rows:
            console.print(titled(comparison_table(rows, labels)))


@dataclass(frozen=True)
class Comparison:
    """Two studies side by side (:func:`compare`): in Jupyter the tables ``bnprobe compare`` prints,
    as plain data :meth:`to_dict` (``bnprobe compare --json``)."""

    a: Results
    b: Results
    metrics: Metrics = None
    sources: tuple[str, str] | None = None

    def to_dict(self) -> dict:
        return comparison_json(self.a, self.b, self.sources)

    def _repr_html_(self) -> str:
        return recorded_html(lambda console: render_comparison(self.a, self.b, console, metrics=self.metrics,
                                                               sources=self.sources))


def compare(a: Results | str | Path, b: Results | str | Path, metrics: Metrics = None) -> Comparison:
    """Study ``a`` against study ``b`` (each a :class:`Results` or the folder holding one), checked as
    ``bnprobe compare`` checks them."""
    sources = tuple(None if isinstance(x, Results) else str(x) for x in (a, b))
    a, b = (x if isinstance(x, Results) else Results.load(x) for x in (a, b))
    _check_shared(a, b, ("A", "B"))
    return Comparison(a, b, metrics, None if None in sources else sources)
