"""(b) Do BN representations cluster better?

One primary metric decides: :data:`PRIMARY_METRIC` (``ari`` of the ``hdbscan`` probe), the adjusted
Rand index of the clusters against the class labels with noise as one more cluster.  It is corrected
for chance, and it charges both a wrong grouping and leaving samples as noise, so it cannot be won on
one count and lost on the other, as ``purity`` (clustered samples only) and ``noise_fraction`` can.
Those, ``n_clusters``, ``dbcv``, ``nmi`` and ``ami`` stay in the tables and in
``numbers["descriptors"]`` as descriptors; they are not votes.

Per layer, bn's advantage ``bn - other`` in ARI, paired by seed, is *better* when its Holm-adjusted
p-value that the advantage exceeds :data:`CLUSTERING_MARGIN` is below 0.05 (the family: every layer),
*not better* when the Holm-adjusted p-value that it lies below the margin is (bn is worse, or at most
negligibly better), and *unclear* otherwise.  HOLDS when more than half the layers read better, DOES
NOT HOLD when more than half read not better, UNDECIDED otherwise.  Each layer also carries the ARI's
permutation chance level (``chance``: the mean over the compared runs of ``ari_chance_mean``, the
root mean square of ``ari_chance_std`` and the largest ``ari_chance_p``), so a layer whose clusters
follow the classes no better than chance is named.
"""

from __future__ import annotations

import math
import statistics

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.report import ALPHA, HOLM, MARGIN_TESTS, Results, p_above, p_below, seed_values, seeds_for
from bnprobe.reproduce._verdict import (
    BETTER,
    NOT_BETTER,
    UNCLEAR,
    SeedsNeeded,
    Verdict,
    claims,
    fastest_route,
    interval_text,
    kth_smallest,
    layer_estimates,
    significant,
)

PRIMARY_METRIC = "ari"
"""The one ``hdbscan`` metric (b) decides on: the adjusted Rand index, corrected for chance."""
CLUSTERING_MARGIN = 0.02
"""An ARI advantage that is negligible.  ARI is 1 for the classes exactly, 0 in expectation by chance
(and can go below 0); 0.02 is small on it."""
DESCRIPTORS = ("nmi", "ami", "purity", "noise_fraction", "n_clusters", "dbcv")
"""The other ``hdbscan`` metrics, reported beside the verdict but not deciding it."""


def chance_level(results: Results, probe: str, layer: str, variants: tuple[str, ...]) -> dict | None:
    """The ARI's permutation chance level at ``layer`` over the runs of ``variants`` (module docstring)."""
    def values(metric: str) -> list[float]:
        return [v for variant in variants for v in seed_values(results, probe, layer, metric, variant).values()
                if v is not None and math.isfinite(v)]

    means, stds, ps = values("ari_chance_mean"), values("ari_chance_std"), values("ari_chance_p")
    if not means:
        return None
    return {"mean": statistics.fmean(means), "std": math.sqrt(statistics.fmean(s * s for s in stds)) if stds else None,
            "p": max(ps) if ps else None, "runs": len(means)}


def clustering_verdict(results: Results, variant: str = "identity", probe: str = "hdbscan",
                       margin: float = CLUSTERING_MARGIN) -> Verdict:
    """(b): the BN model's representations cluster better, on the primary metric (module docstring)."""
    finding = "BN representations cluster better"
    rule = (f"per layer, {PRIMARY_METRIC} (the primary metric) bn - {variant} paired by seed: better if the advantage "
            f"is > {margin} at Holm-adjusted p < {ALPHA:.2f} over the layers, not better if it is < {margin} at "
            "Holm-adjusted p < 0.05; HOLDS (DOES NOT HOLD) if more than half the layers read better (not better)")
    estimates = layer_estimates(results, probe, PRIMARY_METRIC, variant)
    if not estimates:
        return Verdict("b", finding, None, rule, f"no paired {probe} {PRIMARY_METRIC} numbers for bn and {variant}")
    raw = {BETTER: {layer: p_above(e, margin) for layer, (e, _) in estimates.items()},
           NOT_BETTER: {layer: p_below(e, margin) for layer, (e, _) in estimates.items()}}
    adjusted = claims(raw)
    readings = {layer: BETTER if significant(adjusted[BETTER][layer])
                else NOT_BETTER if significant(adjusted[NOT_BETTER][layer]) else UNCLEAR for layer in estimates}
    majority = len(readings) // 2 + 1
    counts = {name: sum(r == name for r in readings.values()) for name in (BETTER, NOT_BETTER, UNCLEAR)}
    holds = True if counts[BETTER] >= majority else False if counts[NOT_BETTER] >= majority else None
    variants = (REFERENCE_VARIANT, variant)
    chance = {layer: chance_level(results, probe, layer, variants) for layer in estimates}
    evidence = (f"{PRIMARY_METRIC}: better at {counts[BETTER]}, not better at {counts[NOT_BETTER]}, unclear at "
                f"{counts[UNCLEAR]} of {len(readings)} layers (a decision needs {majority}); "
                + ", ".join(f"{layer} {interval_text(interval)}" for layer, (_, interval) in estimates.items()))
    at_chance = [layer for layer, c in chance.items() if c and c["p"] is not None and c["p"] >= ALPHA]
    if at_chance:
        evidence += f"; clusters no better than chance (permutation p >= 0.05) in some run at {', '.join(at_chance)}"
    needed = None if holds is not None else _seeds_needed(estimates, margin, majority)
    numbers = {"probe": probe, "primary": PRIMARY_METRIC, "difference": f"bn - {variant}", "tests": MARGIN_TESTS,
               "correction": HOLM + " (the layers), for each of better and not better", "margin": margin,
               "layers": {layer: {**interval, **estimate.to_dict(), "p_better": raw[BETTER][layer],
                                  "p_better_holm": adjusted[BETTER][layer], "p_not_better": raw[NOT_BETTER][layer],
                                  "p_not_better_holm": adjusted[NOT_BETTER][layer], "reading": readings[layer],
                                  "chance": chance[layer]}
                          for layer, (estimate, interval) in estimates.items()},
               "descriptors": {metric: {layer: interval for layer, (_, interval) in
                                        layer_estimates(results, probe, metric, variant).items()}
                               for metric in DESCRIPTORS}}
    return Verdict("b", finding, holds, rule, evidence, numbers, needed)


def _seeds_needed(estimates: dict, margin: float, majority: int) -> SeedsNeeded:
    """Seeds at which a majority of layers would likely read better (or not better), each at the
    Bonferroni level that Holm's first step needs (so the count errs high)."""
    level = ALPHA / len(estimates)
    better = [seeds_for(e.value - margin, e.spread, level) for e, _ in estimates.values()]
    not_better = [seeds_for(margin - e.value, e.spread, level) for e, _ in estimates.values()]
    return fastest_route({"toward HOLDS": kth_smallest(better, majority),
                          "toward DOES NOT HOLD": kth_smallest(not_better, majority)},
                         f"fewer than {majority} layers have an advantage clearly away from the margin {margin} "
                         "(or their differences do not vary)")
