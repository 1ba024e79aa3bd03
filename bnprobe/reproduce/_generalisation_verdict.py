"""(a2) Is BN's effect on sparsity a significant factor affecting generalisation?

The finding is about *BN's effect* on sparsity, so (a2) asks how much of the generalisation gap
(train minus test accuracy) BN's change of sparsity accounts for, and whether that is negligible:

    explained = β · Δs

* ``Δs`` -- BN's change of sparsity: ``bn - other`` of the run's sparsity (the mean over layers of
  ``channel_sparsity``), paired by seed;
* ``β`` -- how much the gap moves with sparsity: the least-squares slope of the gap on the sparsity
  over the runs of ``bn`` and ``other``, *within variants* (each centred on its own means, so that
  what BN does to both does not count as one explaining the other).

Its standard error is the delta method's, ``√(Δs² se(β)² + β² se(Δs)²)`` (within-variant deviations
are independent of the variants' means), with the smaller of the two parts' degrees of freedom.  HOLDS
when the explained gap lies inside ``±``:data:`GAP_MARGIN` (TOST at 0.05: the interval wholly inside),
DOES NOT HOLD when it lies beyond (the interval wholly outside), UNDECIDED otherwise.  The gap alone
decides: test accuracy tracks it, and a second target would be a second, correlated test.

This replaces a test of the correlation itself, which a feasible study cannot decide: ruling out a
strong relation (``|r| >= 0.5``) at the observed within-variant ``r`` takes ~150 seeds per variant,
and detecting ``r`` of 0.37 ~30 (80% power).  A correlation measures how tightly the gap follows
sparsity from seed to seed, which seed noise in the eval-mode accuracy swamps; the explained gap
measures how much BN's sparsity change could move it, which stays small when either the slope or
the change is small.  The correlations are still reported (``numbers["correlations"]``), with the
explained gap of each layer's sparsity (``numbers["layers"]``, no vote).
"""

from __future__ import annotations

import math
import statistics

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.report import (
    ALPHA,
    MARGIN_TESTS,
    Estimate,
    Results,
    correlation,
    correlation_seeds_for,
    p_beyond,
    p_inside,
    seeds_for,
)
from bnprobe.reproduce._verdict import Verdict, fastest_route

GAP_MARGIN = 0.01
"""A generalisation gap that BN's sparsity change may account for and still be negligible: one
percentage point of accuracy."""
STRONG_CORRELATION = 0.5
"""A strong relation (Cohen's "large" r), reported for the correlation test this verdict replaced."""
GAP, TEST = "generalisation_gap", "test_accuracy"


def run_sparsity(results: Results, variants: tuple[str, ...], probe: str = "sparsity",
                 metric: str = "channel_sparsity") -> list[dict]:
    """The runs of ``variants`` with a test accuracy and ``metric`` numbers, at every layer that all of them have.

    One row per run: ``variant``, ``seed``, ``layers`` ({layer: sparsity}), ``sparsity`` (their mean),
    ``generalisation_gap`` (train - test accuracy) and ``test_accuracy``.  Rows compare the same
    layers, so a run missing one layer does not shift the others' mean.  A run with no ``metric`` at
    all (diverged, so not probed, or its probe failed) is left out, not allowed to empty ``common``.
    """
    runs = [run for run in results.runs if run.variant in variants and run.test_accuracy is not None
            and any(numbers.get(metric) is not None for numbers in run.numbers().get(probe, {}).values())]
    values = [{layer: v for layer, numbers in run.numbers().get(probe, {}).items()
               if (v := numbers.get(metric)) is not None} for run in runs]
    common = [layer for layer in results.layers if values and all(layer in v for v in values)]
    if not common:
        return []
    return [{"variant": run.variant, "seed": run.seed, "layers": {layer: v[layer] for layer in common},
             "sparsity": statistics.fmean(v[layer] for layer in common),
             GAP: run.train_accuracy - run.test_accuracy, TEST: run.test_accuracy}
            for run, v in zip(runs, values, strict=True)]


def within_slope(x: list[float], y: list[float], groups: list[str]) -> Estimate:
    """The least-squares slope of ``y`` on ``x`` with each group centred on its own means, its standard
    error and ``values - groups - 1`` degrees of freedom (untestable without spread or residual df)."""
    dx: list[float] = []
    dy: list[float] = []
    for group in dict.fromkeys(groups):
        xs = [a for a, g in zip(x, groups, strict=True) if g == group]
        ys = [b for b, g in zip(y, groups, strict=True) if g == group]
        dx += [a - statistics.fmean(xs) for a in xs]
        dy += [b - statistics.fmean(ys) for b in ys]
    sxx = sum(a * a for a in dx)
    df = len(dx) - len(set(groups)) - 1
    if sxx == 0 or df < 1:
        why = "sparsity does not vary within a variant" if sxx == 0 else "too few runs for a slope's error"
        return Estimate(math.nan, None, None, len(dx), why)
    slope = sum(a * b for a, b in zip(dx, dy, strict=True)) / sxx
    residual = sum((b - slope * a) ** 2 for a, b in zip(dx, dy, strict=True)) / df
    return Estimate(slope, math.sqrt(residual / sxx), df, len(dx))


def explained_gap(slope: Estimate, change: Estimate) -> Estimate:
    """``slope · change`` with the delta method's standard error and the smaller degrees of freedom."""
    value = slope.value * change.value
    if slope.se is None or change.se is None or slope.df is None or change.df is None:
        return Estimate(value, None, None, change.n, slope.why or change.why)
    se = math.sqrt(change.value**2 * slope.se**2 + slope.value**2 * change.se**2)
    if se == 0:
        return Estimate(value, None, None, change.n, "the explained gap has no spread")
    return Estimate(value, se, min(slope.df, change.df), change.n)


def _explained(rows: list[dict], sparsity: list[float], variant: str) -> tuple[Estimate, Estimate, Estimate]:
    """Slope, sparsity change (paired by seed) and explained gap for one sparsity column of ``rows``."""
    groups = [row["variant"] for row in rows]
    slope = within_slope(sparsity, [row[GAP] for row in rows], groups)
    by_run = {(row["variant"], row["seed"]): s for row, s in zip(rows, sparsity, strict=True)}
    changes = [s - by_run[(variant, seed)] for (v, seed), s in sorted(by_run.items())
               if v == REFERENCE_VARIANT and (variant, seed) in by_run]
    change = Estimate.of_differences(changes) if changes else Estimate(math.nan, None, None, 0, "no paired seeds")
    return slope, change, explained_gap(slope, change)


def generalisation_verdict(results: Results, variant: str = "identity", margin: float = GAP_MARGIN) -> Verdict:
    """(a2): BN's change of sparsity accounts for a negligible generalisation gap (module docstring)."""
    finding = "sparsity is not a significant factor affecting generalisation"
    rule = (f"explained gap = within-variant slope of the gap (train - test accuracy) on sparsity (mean over layers) "
            f"x bn's sparsity change (bn - {variant}, paired by seed), delta-method t test: HOLDS if it lies inside "
            f"±{margin} (the 95% interval wholly inside), DOES NOT HOLD if beyond ±{margin}")
    rows = run_sparsity(results, (REFERENCE_VARIANT, variant))
    if not rows:
        return Verdict("a2", finding, None, rule,
                       f"no runs of bn and {variant} with sparsity numbers and a test accuracy")
    slope, change, explained = _explained(rows, [row["sparsity"] for row in rows], variant)
    p_holds, p_not = p_inside(explained, margin), p_beyond(explained, margin)
    holds = True if p_holds is not None and p_holds < ALPHA else False if p_not is not None and p_not < ALPHA else None
    evidence = (f"{len(rows)} runs; explained gap {_signed(explained)} (slope {_signed(slope)} x sparsity change "
                f"{_signed(change)}); p(inside ±{margin}) {_p(p_holds)}, p(beyond) {_p(p_not)}")
    if explained.why:
        evidence += f"; {explained.why}"
    needed = None
    if holds is None:
        spread = explained.spread
        needed = fastest_route({"toward HOLDS": seeds_for(explained.value, spread, tost_margin=margin),
                                "toward DOES NOT HOLD": seeds_for(abs(explained.value) - margin, spread)},
                               f"the explained gap {_signed(explained)} lies too close to ±{margin}"
                               if spread else explained.why or "no spread")
    layers = {}
    for layer in rows[0]["layers"]:
        s, c, e = _explained(rows, [row["layers"][layer] for row in rows], variant)
        layers[layer] = {"slope": s.to_dict(), "sparsity_change": c.to_dict(), "explained_gap": e.to_dict()}
    numbers = {"target": GAP, "sparsity": "mean over layers of channel_sparsity", "margin": margin,
               "tests": MARGIN_TESTS, "slope": slope.to_dict(), "sparsity_change": change.to_dict(),
               "explained_gap": explained.to_dict(), "p_inside": p_holds, "p_beyond": p_not,
               "correlations": _correlations(rows), "layers": layers,
               "runs": [{k: row[k] for k in ("variant", "seed", "sparsity", GAP, TEST)} for row in rows]}
    return Verdict("a2", finding, holds, rule, evidence, numbers, needed)


def _correlations(rows: list[dict]) -> dict:
    """Pearson r of the sparsity with the gap and with test accuracy, within variants, as plain data, each
    with the seeds per variant a correlation test would need at that r: to detect it, and to rule out
    a strong one (:data:`STRONG_CORRELATION`), at 80% power."""
    variants = [row["variant"] for row in rows]
    groups = len(set(variants))
    x = [row["sparsity"] for row in rows]
    out: dict[str, dict | None] = {}
    for target in (GAP, TEST):
        r = correlation(x, [row[target] for row in rows], variants)
        if r is None:
            out[target] = None
            continue
        z = math.atanh(max(-0.999999, min(0.999999, r.estimate)))
        out[target] = {**r.to_dict(), "seeds_to_detect": correlation_seeds_for(abs(z), groups),
                       "seeds_to_rule_out_strong": correlation_seeds_for(math.atanh(STRONG_CORRELATION) - abs(z),
                                                                         groups)}
    return out


def _signed(estimate: Estimate) -> str:
    """``+0.0021 (se 0.0067)``: an estimate with its standard error."""
    if math.isnan(estimate.value):
        return "—"
    text = f"{estimate.value:+.4f}"
    return text if estimate.se is None else f"{text} (se {estimate.se:.4f})"


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3f}"
