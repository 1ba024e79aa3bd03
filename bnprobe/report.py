"""Rendering :class:`Results` in the terminal with rich.

One table per probe: rows are the layers in forward order, columns the variants, each cell the
probe's key metric as mean +/- standard deviation over seeds (the sample standard deviation,
``ddof=1``; a single seed shows the bare value).  Then one line per variant with its accuracy.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from bnprobe.probes.base import MODEL_SCOPE_LAYER, list_probes, parse_probe_spec
from bnprobe.results import Results


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation (None for one value) and count of one metric over seeds."""

    mean: float
    std: float | None
    n: int

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.std:.3f}"


def summarise(values: list[float]) -> Summary | None:
    """Mean and sample standard deviation of the finite ``values``; None when there are none."""
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Summary(statistics.fmean(finite), std, len(finite))


def metric_values(results: Results, probe: str, layer: str, metric: str, variant: str) -> list[float]:
    """The value of ``metric`` for ``probe`` at ``layer`` in every seed's run of ``variant``."""
    out = []
    for run in results.runs:
        if run.variant != variant:
            continue
        value = run.probes.get(probe, {}).get(layer, {}).get(metric)
        if value is not None:
            out.append(value)
    return out


def key_metric(results: Results, probe: str) -> str | None:
    """The metric the terminal shows for ``probe``: its declared key metric, else the first one."""
    name = parse_probe_spec(probe)[0]
    declared = {info.name: info.cls.key_metric for info in list_probes()}.get(name)
    seen = [m for run in results.runs for layer in run.probes.get(probe, {}).values() for m in layer]
    if declared and declared in seen:
        return declared
    return seen[0] if seen else None


def probe_layers(results: Results, probe: str) -> list[str]:
    """Layers that ``probe`` has numbers for, in forward order (``model`` scope first)."""
    present = {layer for run in results.runs for layer in run.probes.get(probe, {})}
    ordered = [MODEL_SCOPE_LAYER] if MODEL_SCOPE_LAYER in present else []
    ordered += [layer for layer in results.layers if layer in present]
    ordered += sorted(present - set(ordered))
    return ordered


def probe_table(results: Results, probe: str, metric: str | None = None) -> Table | None:
    """A rich table of ``metric`` (default: the key metric) per layer and variant."""
    metric = metric or key_metric(results, probe)
    if metric is None:
        return None
    seeds = len(results.seeds)
    suffix = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
    table = Table(title=f"{probe} — {metric} ({suffix})", title_justify="left")
    table.add_column("layer", style="cyan", no_wrap=True)
    for variant in results.variants:
        table.add_column(variant, justify="right")
    for layer in probe_layers(results, probe):
        cells = []
        for variant in results.variants:
            summary = summarise(metric_values(results, probe, layer, metric, variant))
            cells.append(str(summary) if summary else "—")
        table.add_row(layer, *cells)
    return table


def accuracy_line(results: Results, variant: str) -> str:
    """``variant: train 0.981 ± 0.004, test 0.962 ± 0.010, final loss 0.071`` (+ divergences)."""
    runs = [r for r in results.runs if r.variant == variant]
    train = summarise([r.train_accuracy for r in runs])
    test = summarise([r.test_accuracy for r in runs])
    loss = summarise([r.final_loss for r in runs])
    parts = [f"train {train}" if train else "train —", f"test {test}" if test else "test —",
             f"final loss {loss}" if loss else "final loss —"]
    diverged = [r for r in runs if r.diverged_at_epoch is not None]
    if diverged:
        parts.append(f"diverged in {len(diverged)}/{len(runs)} runs "
                     f"(epochs {', '.join(str(r.diverged_at_epoch) for r in diverged)})")
    swapped = runs[0].swap.get("n_swapped") if runs else None
    if swapped:
        parts.append(f"{swapped} norm layers swapped")
    return f"{variant}: " + ", ".join(parts)


def render(results: Results, console: Console | None = None) -> None:
    """Print the per-probe tables, the accuracy lines and any probe failures."""
    console = console or Console()
    console.print(f"[bold]{results.model}[/bold] on [bold]{results.dataset}[/bold]: "
                  f"{len(results.variants)} variants × {len(results.seeds)} seeds, "
                  f"{results.config.get('samples_probed', '?')} probed samples")
    for probe in results.probe_keys:
        table = probe_table(results, probe)
        if table is not None:
            console.print(table)
    console.print("[bold]accuracy[/bold]")
    for variant in results.variants:
        console.print("  " + accuracy_line(results, variant), highlight=False)
    failures = [(run, f) for run in results.runs for f in run.failures]
    if failures:
        console.print(f"[yellow]{len(failures)} probe failures[/yellow] (details in results.json):")
        for run, failure in failures[:5]:
            console.print(f"  {run.variant} seed {run.seed} {failure['probe']} @ {failure['layer']}: "
                          f"{failure['error']}", highlight=False, markup=False)
