"""How much of a study's spread comes from the seeds and how much from the probed samples.

A study with ``sample_sets`` K >= 2 probes each seed's runs on K disjoint sets of its own
(:attr:`bnprobe.study.StudyConfig.sample_sets`), so the sets are nested in the seeds.  For one
variant's number (or its paired difference from ``bn``, the same sets on both sides) ``y[s, k]`` of
seed ``s`` and set ``k``, the one-way random-effects analysis of variance with the seeds as groups
gives

* ``sample_var`` = MS_within = ``sum (y[s,k] - ȳ[s])² / (S (K - 1))``: the variance between sample sets
  within a seed;
* ``seed_var`` = ``max(0, (MS_between - MS_within) / K)``, MS_between = ``K sum (ȳ[s] - ȳ)² / (S - 1)``:
  the variance the seeds add (the usual moment estimate, truncated at 0).

A run's number is the mean over its K sets, so its variance across seeds is ``seed_var +
sample_var / K``; ``sample_share`` is the part of that from the samples.  Because every seed has its
own sets, the seed-to-seed spread of the run numbers already carries the sample spread, and the
intervals over seeds (:func:`bnprobe.report.paired_difference`) are exact t intervals that include it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.report._results import Results


@dataclass(frozen=True)
class SpreadSources:
    """The variance of a number split into seeds and sample sets (see the module docstring)."""

    seeds: int
    sets: int
    seed_sd: float
    """Standard deviation the seeds add: ``sqrt(seed_var)``."""
    sample_sd: float
    """Standard deviation between the sample sets of one seed: ``sqrt(sample_var)``."""
    sample_share: float | None
    """Share of a run number's variance (the mean over its ``sets``) from the samples; None when that
    variance is 0."""

    def to_dict(self) -> dict:
        return asdict(self)


def set_values(results: Results, probe: str, layer: str, metric: str, variant: str) -> dict[int, list[float]]:
    """``{seed: [one number per sample set]}`` of ``variant``'s runs that have every set's number."""
    out = {}
    for run in results.runs:
        if run.variant != variant or not run.sample_sets:
            continue
        numbers = [s.get(probe, {}).get(layer, {}).get(metric) for s in run.sample_sets]
        if all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers):
            out[run.seed] = [float(n) for n in numbers]
    return out


def spread_sources(results: Results, probe: str, layer: str, metric: str, variant: str,
                   reference: str | None = REFERENCE_VARIANT) -> SpreadSources | None:
    """Where the spread of ``variant``'s ``metric`` comes from -- of its paired difference ``reference
    - variant`` when ``reference`` is another variant -- or None without 2 seeds of 2 sets each."""
    values = set_values(results, probe, layer, metric, variant)
    if reference is not None and reference != variant:
        other = set_values(results, probe, layer, metric, reference)
        values = {seed: [r - v for r, v in zip(other[seed], sets, strict=True)]
                  for seed, sets in values.items() if seed in other and len(other[seed]) == len(sets)}
    groups = [sets for _, sets in sorted(values.items())]
    if len(groups) < 2 or len({len(g) for g in groups}) != 1 or len(groups[0]) < 2:
        return None
    seeds, sets = len(groups), len(groups[0])
    means = [math.fsum(g) / sets for g in groups]
    grand = math.fsum(means) / seeds
    within = math.fsum((y - m) ** 2 for g, m in zip(groups, means, strict=True) for y in g) / (seeds * (sets - 1))
    between = sets * math.fsum((m - grand) ** 2 for m in means) / (seeds - 1)
    seed_var = max(0.0, (between - within) / sets)
    run_var = seed_var + within / sets
    return SpreadSources(seeds, sets, math.sqrt(seed_var), math.sqrt(within),
                         (within / sets) / run_var if run_var > 0 else None)


def spread_lines(results: Results, probe: str, metric: str, reference: str = REFERENCE_VARIANT) -> list[str]:
    """The report's lines on where ``metric``'s spread comes from: per layer and variant (the paired
    difference from ``reference`` for the others), the seeds' and the samples' standard deviations and
    the samples' share of a run number's variance; none when the runs were probed on one sample set."""
    rows = []
    for layer in results.layers:
        for variant in results.variants:
            sources = spread_sources(results, probe, layer, metric, variant, reference)
            if sources is not None:
                share = "" if sources.sample_share is None else f" ({sources.sample_share:.0%})"
                what = variant if variant == reference else f"{reference} − {variant}"
                rows.append((layer, what, f"seeds ±{sources.seed_sd:.2g}  samples ±{sources.sample_sd:.2g}{share}"))
    if not rows:
        return []
    sets = next(len(run.sample_sets) for run in results.runs if run.sample_sets)
    wide = [max(len(row[i]) for row in rows) for i in (0, 1)]
    return [f"{probe} {metric}: sd from seeds and from samples ({sets} sample sets per seed; "
            "% of a run's variance from samples)",
            *(f"  {layer:<{wide[0]}}  {what:<{wide[1]}}  {text}" for layer, what, text in rows)]
