"""Numbers over seeds: summaries, differences and their 95% confidence intervals.

A study trains every variant under the same seeds, and seed ``s`` of every variant starts from the
same conv/linear weights and sees the same data order.  So a variant is compared with the reference
*paired by seed*: the per-seed differences ``d_s = x_s - ref_s`` carry the effect of the variant with
the seed-to-seed noise they share taken out, and the interval is Student's t on those differences,

    mean(d) ± t(0.975, n - 1) · sd(d) / √n          (n seed pairs, sd with ddof = 1).

One pair gives the difference with no interval.  Two *different* studies share nothing but seed
numbers, so :func:`welch_difference` compares them as independent samples (Welch's t interval with
the Welch–Satterthwaite degrees of freedom).  :func:`correlation` is Pearson's r between two
numbers of the same runs, with Fisher's z interval, optionally within groups (variants).

**Printed digits** (:func:`format_numbers`).  A mean ± std, or a difference and its interval, is
printed with one number of decimals for all its parts, chosen from its *spread*: the std, or the
interval's half-width -- for a starred difference the smaller of the half-width and the bound
nearest to 0, so that neither the estimate nor that bound reads as zero.  Without a spread (one
seed, or no variation) the value itself is the scale.  The decimals are the fewest that show the
scale with 2 significant digits, but never fewer than :data:`MIN_DECIMALS` (so ordinary numbers
keep the familiar ``0.962 ± 0.010``, and counts such as ``n_clusters`` stay ``12.000 ± 3.200``);
past :data:`MAX_DECIMALS` every part switches to scientific notation with 3 significant digits
(``1.23e-09 ± 4.56e-10``).  A nonzero spread therefore never prints as ``0.000``.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy.stats import norm
from scipy.stats import t as student_t

CONFIDENCE = 0.95
PAIRED_METHOD = "paired by seed; Student t interval on the per-seed differences (n-1 df)"
WELCH_METHOD = "independent samples; Welch t interval (Welch-Satterthwaite df)"
CORRELATION_METHOD = ("Pearson r; Fisher z interval tanh(atanh(r) ± z(0.975) / sqrt(n_eff - 3)), "
                      "n_eff = values - groups + 1")
MIN_DECISIVE = 3
"""The fewest values (seed pairs, runs) whose interval can exclude 0: two pairs leave one degree of freedom."""
MIN_DECIMALS = 3
"""Decimals every printed number gets at least."""
MAX_DECIMALS = 8
"""Beyond this many decimals a number prints in scientific notation instead."""


def decimals_for(scale: float | None) -> int | None:
    """Decimals that show ``scale`` with 2 significant digits, at least :data:`MIN_DECIMALS`; None
    (scientific notation) when that needs more than :data:`MAX_DECIMALS` (module docstring)."""
    if scale is None or scale == 0 or not math.isfinite(scale):
        return MIN_DECIMALS
    needed = max(MIN_DECIMALS, 1 - math.floor(math.log10(abs(scale))))
    return needed if needed <= MAX_DECIMALS else None


def format_numbers(values: Iterable[float], scale: float | None, signed: bool = False) -> list[str]:
    """``values`` printed alike, with the decimals :func:`decimals_for` picks for ``scale``.

    One format for every part of a cell, so ``mean ± std`` or ``Δ [low, high]`` line up digit for digit.
    """
    decimals = decimals_for(scale)
    spec = ("+" if signed else "") + (f".{decimals}f" if decimals is not None else ".2e")
    return [format(value, spec) for value in values]


def format_value(value: float | None) -> str:
    """One number on its own (no spread): enough decimals for 2 significant digits of it; ``—`` for None."""
    return "—" if value is None else format_numbers([value], value)[0]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (``ddof=1``; None for one value) and count of some values."""

    mean: float
    std: float | None
    n: int

    def __str__(self) -> str:
        """``mean ± std`` with the digits of :func:`format_numbers`, scaled by the std (or the mean alone)."""
        if self.std is None:
            return format_value(self.mean)
        mean, std = format_numbers([self.mean, self.std], self.std or self.mean)
        return f"{mean} ± {std}"

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(values: Iterable[float | None]) -> Summary | None:
    """Mean and sample standard deviation of the non-null ``values``; None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return Summary(statistics.fmean(present), std, len(present))


@dataclass(frozen=True)
class Difference:
    """An estimated difference and its :data:`CONFIDENCE` interval (``low``/``high`` None: too few values).

    ``n`` is how many values stand behind the estimate: seed pairs for a paired difference, the
    smaller sample for Welch's, the runs for a :func:`correlation` (whose estimate is r).
    """

    estimate: float
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether 0 lies outside a real interval: the difference is not seed noise.

        Never from fewer than :data:`MIN_DECISIVE` values, nor from an interval of zero width
        (differences that do not vary say nothing of the noise), so such a difference is never starred.
        """
        return (self.low is not None and self.high is not None and self.n >= MIN_DECISIVE
                and self.high > self.low and (self.low > 0 or self.high < 0))

    def __str__(self) -> str:
        """``Δ [low, high]`` (`` *`` when the interval excludes 0) with the digits of :func:`format_numbers`."""
        if self.low is None or self.high is None:
            return format_numbers([self.estimate], self.estimate, signed=True)[0]
        half = (self.high - self.low) / 2
        scale = min(half, abs(self.low), abs(self.high)) if self.excludes_zero else half
        estimate, low, high = format_numbers([self.estimate, self.low, self.high], scale or self.estimate, signed=True)
        mark = " *" if self.excludes_zero else ""
        return f"{estimate} [{low}, {high}]{mark}"

    def to_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t critical value: ``t.ppf((1 + confidence) / 2, df)``."""
    return float(student_t.ppf((1 + confidence) / 2, df))


def paired_difference(values: Mapping[int, float | None], reference: Mapping[int, float | None]) -> Difference | None:
    """``values - reference`` over the seeds both have, with the paired t interval (module docstring).

    Both map seed -> value; seeds missing (or null) on either side are left out of the pairing.
    """
    diffs = [v - reference[s] for s, v in sorted(values.items())
             if v is not None and reference.get(s) is not None]
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    n = len(diffs)
    if n < 2:
        return Difference(mean, None, None, n)
    half = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, n)


def welch_difference(values: Iterable[float | None], reference: Iterable[float | None]) -> Difference | None:
    """``mean(values) - mean(reference)`` for independent samples, with Welch's t interval.

    Both need at least two values for an interval.  When neither varies the interval is the point
    itself (there is no noise to allow for).
    """
    a, b = summarise(values), summarise(reference)
    if a is None or b is None:
        return None
    estimate = a.mean - b.mean
    n = min(a.n, b.n)
    if a.std is None or b.std is None:
        return Difference(estimate, None, None, n)
    var_a, var_b = a.std**2 / a.n, b.std**2 / b.n
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return Difference(estimate, estimate, estimate, n)
    df = (var_a + var_b) ** 2 / (var_a**2 / (a.n - 1) + var_b**2 / (b.n - 1))
    half = t_quantile(df) * se
    return Difference(estimate, estimate - half, estimate + half, n)


def correlation(x: Sequence[float], y: Sequence[float],
                groups: Sequence[Hashable] | None = None) -> Difference | None:
    """Pearson's r of ``x`` and ``y`` with its :data:`CONFIDENCE` interval (:data:`CORRELATION_METHOD`).

    With ``groups`` (one label per value, e.g. each run's variant) it is the *pooled within-group*
    correlation: every group is centred on its own means first, so a difference between the groups'
    means does not count as a relation, and each group costs one degree of freedom (a group of one
    value carries no information and is left out).  Fisher's z needs ``n_eff >= 4`` for an interval;
    a perfect correlation gets the point as its interval.  None when either side does not vary
    within any group (r is undefined).  ``n`` of the result is the number of values used.
    """
    labels = list(groups) if groups is not None else [None] * len(x)
    by_group: dict[Hashable, list[tuple[float, float]]] = {}
    for label, a, b in zip(labels, x, y, strict=True):
        by_group.setdefault(label, []).append((a, b))
    kept = [pairs for pairs in by_group.values() if len(pairs) > 1]
    if not kept or all(len({a for a, _ in pairs}) == 1 for pairs in kept) \
            or all(len({b for _, b in pairs}) == 1 for pairs in kept):
        return None
    dx: list[float] = []
    dy: list[float] = []
    for pairs in kept:
        mean_x, mean_y = statistics.fmean(a for a, _ in pairs), statistics.fmean(b for _, b in pairs)
        dx += [a - mean_x for a, _ in pairs]
        dy += [b - mean_y for _, b in pairs]
    r = sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sum(a * a for a in dx) * sum(b * b for b in dy))
    r = max(-1.0, min(1.0, r))
    n = len(dx)
    n_eff = n - len(kept) + 1
    if n_eff < 4:
        return Difference(r, None, None, n)
    if abs(r) == 1.0:
        return Difference(r, r, r, n)
    z, half = math.atanh(r), float(norm.ppf((1 + CONFIDENCE) / 2)) / math.sqrt(n_eff - 3)
    return Difference(r, math.tanh(z - half), math.tanh(z + half), n)


STATS_CSV_COLUMNS = ("probe", "layer", "metric", "variant", "n", "mean", "std",
                     "diff", "diff_low", "diff_high", "diff_n", "diff_excludes_zero")


@dataclass(frozen=True)
class MetricStats:
    """One variant's numbers for one metric of one probe at one layer, over the study's seeds."""

    probe: str
    layer: str
    metric: str
    variant: str
    summary: Summary | None
    difference: Difference | None
    """The variant minus the reference variant, paired by seed; None for the reference itself."""

    def csv_row(self) -> tuple:
        """The row under :data:`STATS_CSV_COLUMNS`; empty fields for missing numbers."""
        s, d = self.summary, self.difference
        summary = (s.n, s.mean, s.std) if s else (None, None, None)
        difference = (d.estimate, d.low, d.high, d.n, d.excludes_zero if d.low is not None else None) if d \
            else (None,) * 5
        return (self.probe, self.layer, self.metric, self.variant,
                *("" if x is None else x for x in (*summary, *difference)))


def stats_csv(rows: Iterable[MetricStats]) -> str:
    """``rows`` as CSV text under :data:`STATS_CSV_COLUMNS`: the numbers a plot or table shows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STATS_CSV_COLUMNS)
    writer.writerows(row.csv_row() for row in rows)
    return buffer.getvalue()
