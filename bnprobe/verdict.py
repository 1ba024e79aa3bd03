"""Verdicts on the two findings of Potgieter, Mouton & Davel (2025), derived from a study's numbers.

Both rules compare the ``bn`` variant with one BN-free variant (``identity`` by default), paired by
seed and layer: for every layer the per-seed difference ``bn - other`` is averaged over the seeds
both variants have.

* **(a) BN barely changes sparsity.**  Metric ``channel_sparsity`` of the ``sparsity`` probe.  Holds
  when the mean over layers of ``|mean difference|`` is at most ``sparsity_tolerance`` (0.05: five
  percentage points of zeros).
* **(b) BN representations cluster better.**  Metric ``ari`` of the ``hdbscan`` probe (agreement of
  the clusters with the classes; higher is better).  Holds when the mean difference is positive in
  more than half of the layers *and* its mean over layers is positive.

A verdict is ``None`` (undecided) when the numbers it needs are missing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bnprobe.report import seed_values
from bnprobe.results import Results
from bnprobe.stats import format_numbers, format_value, paired_difference

SPARSITY_TOLERANCE = 0.05


@dataclass(frozen=True)
class Verdict:
    """One finding, whether the numbers support it, the rule used and the evidence."""

    finding: str
    holds: bool | None
    rule: str
    evidence: str

    def to_dict(self) -> dict:
        return {"finding": self.finding, "holds": self.holds, "rule": self.rule, "evidence": self.evidence}


def layer_differences(results: Results, probe: str, metric: str, variant: str,
                      reference: str = "bn") -> dict[str, float]:
    """``{layer: mean over seeds of (reference - variant)}``, pairing runs by seed."""
    out: dict[str, float] = {}
    for layer in results.layers:
        difference = paired_difference(seed_values(results, probe, layer, metric, reference),
                                       seed_values(results, probe, layer, metric, variant))
        if difference is not None:
            out[layer] = difference.estimate
    return out


def sparsity_verdict(results: Results, variant: str = "identity",
                     tolerance: float = SPARSITY_TOLERANCE) -> Verdict:
    """Finding (a): removing BN changes channel sparsity by at most ``tolerance`` on average."""
    finding = "BN barely changes representational sparsity"
    rule = (f"mean over layers of |channel_sparsity(bn) - channel_sparsity({variant})| (seed-paired) "
            f"<= {tolerance}")
    diffs = layer_differences(results, "sparsity", "channel_sparsity", variant)
    if not diffs:
        return Verdict(finding, None, rule, "no paired sparsity numbers for bn and " + variant)
    mean_abs = statistics.fmean(abs(d) for d in diffs.values())
    largest = max(diffs, key=lambda layer: abs(diffs[layer]))
    evidence = (f"mean |difference| {format_value(mean_abs)} over {len(diffs)} layers; largest at {largest}: "
                f"{format_numbers([diffs[largest]], diffs[largest], signed=True)[0]}")
    return Verdict(finding, mean_abs <= tolerance, rule, evidence)


def clustering_verdict(results: Results, variant: str = "identity", probe: str = "hdbscan",
                       metric: str = "ari") -> Verdict:
    """Finding (b): the BN model's representations agree better with the classes when clustered."""
    finding = "BN representations cluster better"
    rule = (f"{metric}(bn) - {metric}({variant}) (seed-paired) is positive in more than half of the layers "
            "and positive on average")
    diffs = layer_differences(results, probe, metric, variant)
    if not diffs:
        return Verdict(finding, None, rule, f"no paired {probe} {metric} numbers for bn and {variant}")
    positive = sum(d > 0 for d in diffs.values())
    mean = statistics.fmean(diffs.values())
    evidence = (f"bn ahead in {positive} of {len(diffs)} layers; "
                f"mean difference {format_numbers([mean], mean, signed=True)[0]}")
    return Verdict(finding, positive > len(diffs) / 2 and mean > 0, rule, evidence)
