"""Reading seed-paired differences against a margin: tests, their multiplicity correction and power.

A verdict asks of a difference ``δ`` (``bn - other`` at one layer, over ``n`` seed pairs ``d_s``)
not only whether it is 0 but where it lies against a *margin* ``M`` that matters.  Every test here is
Student's t on the per-seed differences (``se = sd(d) / √n``, ``n - 1`` degrees of freedom), one-sided
against a bound ``c``, and its p-value is *doubled* (capped at 1), so that

    p < α  exactly when the two-sided (1 - α) interval of :func:`bnprobe.report.paired_difference`
           lies wholly beyond ``c``.

* :func:`p_above` -- evidence that ``δ > c``; :func:`p_below` -- that ``δ < c``;
* :func:`p_beyond` -- that ``|δ| > M`` (the interval wholly outside ``±M``): the smaller of the two
  sides' p-values;
* :func:`p_inside` -- that ``|δ| < M`` (two one-sided tests, TOST: the interval wholly inside ``±M``).

A difference is never decisive from fewer than :data:`MIN_SEEDS` pairs, nor when the differences do
not vary (a zero-width interval says nothing about seed noise): the p-value is then None
(:func:`untestable`).

**Many comparisons.**  :func:`holm` adjusts a family of p-values with Holm's step-down method, which
controls the family-wise error rate (the chance of *any* false claim in the family) at ``α``.  A claim
that needs *every* member of a family (every layer alike) is an intersection-union test and needs no
adjustment: it is false only if one of its parts is.

**Power.**  :func:`seeds_for` is the smallest number of seed pairs at which a one-sided test at level
``α`` has :data:`POWER` (80%) of finding an effect as large as the one observed, with the spread
observed: the noncentral t, searched up to :data:`MAX_SEEDS`.  :func:`correlation_seeds_for` does the
same for Pearson's r through Fisher's z (normal approximation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy.stats import nct, norm
from scipy.stats import t as student_t

from bnprobe.report._stats import CONFIDENCE, MIN_DECISIVE

ALPHA = 1 - CONFIDENCE
"""The error rate every test and every family of tests is held to."""
MIN_SEEDS = MIN_DECISIVE
"""The fewest seed pairs from which a difference can be decisive (two give one degree of freedom)."""
POWER = 0.8
"""The chance of a decision at which :func:`seeds_for` says a seed count would *likely* decide."""
MAX_SEEDS = 1000
"""Past this many seeds per variant, a decision counts as out of reach."""
HOLM = "Holm step-down over the family, family-wise error rate 0.05"
MARGIN_TESTS = ("one-sided Student t on the per-seed differences against the margin (n-1 df), p doubled so that "
                "p < 0.05 exactly when the 95% interval lies wholly beyond the margin; fewer than 3 seeds or no "
                "spread: never decisive")

K = TypeVar("K")


@dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error and degrees of freedom, ready to be tested against a bound.

    ``why`` says why it cannot decide anything (too few seeds, no spread); ``se`` and ``df`` are then
    None.  ``n`` is how many seed pairs (or runs) stand behind it.
    """

    value: float
    se: float | None
    df: float | None
    n: int
    why: str | None = None

    @classmethod
    def of_differences(cls, differences: Sequence[float]) -> Estimate:
        """The mean of per-seed differences, ``se = sd / √n`` with ``n - 1`` df (module docstring)."""
        values = np.asarray(differences, dtype=np.float64)
        n = int(values.size)
        mean = float(values.mean()) if n else math.nan
        why = untestable(values)
        if why is not None:
            return cls(mean, None, None, n, why)
        return cls(mean, float(values.std(ddof=1)) / math.sqrt(n), n - 1, n)

    @property
    def spread(self) -> float | None:
        """``se · √n``: the spread of one seed pair, what a power calculation scales (None if untestable)."""
        return None if self.se is None else self.se * math.sqrt(self.n)

    def to_dict(self) -> dict:
        return {"estimate": self.value, "se": self.se, "df": self.df, "n": self.n, "untestable": self.why}


def untestable(differences: Sequence[float] | np.ndarray) -> str | None:
    """Why ``differences`` cannot decide anything (too few, or all equal), or None when they can."""
    n = len(differences)
    if n < MIN_SEEDS:
        return f"{n} seed pair{'s' * (n != 1)}: at least {MIN_SEEDS} are needed"
    if float(np.max(differences)) - float(np.min(differences)) == 0:
        return "the per-seed differences do not vary (a zero-width interval)"
    return None


def p_above(estimate: Estimate, bound: float) -> float | None:
    """Doubled one-sided p-value that the estimated quantity exceeds ``bound`` (module docstring)."""
    if estimate.se is None or estimate.df is None:
        return None
    return min(1.0, 2 * float(student_t.sf((estimate.value - bound) / estimate.se, estimate.df)))


def p_below(estimate: Estimate, bound: float) -> float | None:
    """Doubled one-sided p-value that the estimated quantity lies below ``bound`` (module docstring)."""
    if estimate.se is None or estimate.df is None:
        return None
    return min(1.0, 2 * float(student_t.cdf((estimate.value - bound) / estimate.se, estimate.df)))


def p_beyond(estimate: Estimate, margin: float) -> float | None:
    """p-value that ``|quantity| > margin``: the better of the two sides."""
    above, below = p_above(estimate, margin), p_below(estimate, -margin)
    return None if above is None or below is None else min(above, below)


def p_inside(estimate: Estimate, margin: float) -> float | None:
    """p-value that ``|quantity| < margin`` (TOST: the worse of the two one-sided tests)."""
    above, below = p_above(estimate, -margin), p_below(estimate, margin)
    return None if above is None or below is None else max(above, below)


def holm(pvalues: Mapping[K, float | None]) -> dict[K, float | None]:
    """Holm-adjusted p-values of a family; a member without a p-value counts as ``p = 1`` in the
    family's size (it stays None), so an untestable layer never makes the others easier to claim."""
    order = sorted(pvalues, key=lambda k: 1.0 if pvalues[k] is None else pvalues[k])
    m, running, adjusted = len(order), 0.0, {}
    for rank, key in enumerate(order):
        p = pvalues[key]
        if p is None:
            adjusted[key] = None
            continue
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[key] = running
    return {key: adjusted[key] for key in pvalues}


def _power(effect: float, sd: float, alpha: float, seeds: np.ndarray) -> np.ndarray:
    """Power of the doubled one-sided t test at ``alpha`` for mean ``effect`` past the bound."""
    df = seeds - 1
    critical = student_t.isf(alpha / 2, df)
    return nct.sf(critical, df, effect * np.sqrt(seeds) / sd)


def seeds_for(effect: float, sd: float | None, alpha: float = ALPHA, *, tost_margin: float | None = None) -> int | None:
    """Seed pairs at which the test would likely (:data:`POWER`) decide, for an observed mean and spread.

    ``effect`` is the observed mean's distance past the bound it must clear (positive: on the side a
    decision needs); ``sd`` the per-seed differences' standard deviation.  With ``tost_margin`` it is
    the equivalence test instead: ``effect`` is the observed mean and the test must put the interval
    inside ``±tost_margin`` (both one-sided tests must succeed, power ``P1 + P2 - 1``).  None when no
    count up to :data:`MAX_SEEDS` would, or without a spread to scale.
    """
    if sd is None or not sd > 0 or not math.isfinite(sd):
        return None
    seeds = np.arange(MIN_SEEDS, MAX_SEEDS + 1)
    if tost_margin is None:
        if effect <= 0:
            return None
        power = _power(effect, sd, alpha, seeds)
    else:
        if abs(effect) >= tost_margin:
            return None
        power = (_power(tost_margin + effect, sd, alpha, seeds)
                 + _power(tost_margin - effect, sd, alpha, seeds) - 1)
    enough = np.flatnonzero(power >= POWER)
    return int(seeds[enough[0]]) if enough.size else None


def correlation_seeds_for(z_distance: float, groups: int, alpha: float = ALPHA) -> int | None:
    """Seeds per group at which a Fisher z interval (half-width ``z(1 - alpha/2) / √(n_eff - 3)``) would
    likely (:data:`POWER`) clear a bound ``z_distance`` away in z (``|atanh r - atanh bound|``), with
    ``n_eff = groups · seeds - groups + 1`` (one degree of freedom per group, as
    :func:`bnprobe.report.correlation` counts them).  None past :data:`MAX_SEEDS`."""
    if not z_distance > 0:
        return None
    n_eff = ((norm.isf(alpha / 2) + norm.ppf(POWER)) / z_distance) ** 2 + 3
    seeds = max(MIN_SEEDS, math.ceil((n_eff + groups - 1) / groups))
    return seeds if seeds <= MAX_SEEDS else None
