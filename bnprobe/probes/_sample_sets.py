"""One run probed on several disjoint sample sets: its numbers are the means over the sets.

Probing K disjoint sets of a run brings the choice of probed samples into a study's spread
(:attr:`bnprobe.study.StudyConfig.sample_sets`).  The run's number for a metric is the mean of its K
sets' numbers, or None unless every set has one: a mean over the sets where a probe happened to
work would mix two different averages.  Each set's numbers are kept beside the means
(:attr:`ProbeOutcome.sample_sets`), so the spread can be split into seeds and samples later
(:func:`bnprobe.report.spread_sources`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bnprobe.probes.runner import PendingOutcome, ProbeOutcome, Values


def mean_over_sets(outcomes: Sequence[ProbeOutcome]) -> ProbeOutcome:
    """The outcome of one run probed on each of ``outcomes``' sample sets: per metric the mean over the
    sets (None unless every set has a finite number), every set's failures once per probe and layer,
    the first set's notes, and each set's own numbers in :attr:`ProbeOutcome.sample_sets`."""
    if len(outcomes) == 1:
        return outcomes[0]
    values: Values = {}
    for probe, layer, metric in _keys(outcomes):
        numbers = [o.values.get(probe, {}).get(layer, {}).get(metric) for o in outcomes]
        whole = all(isinstance(n, (int, float)) and math.isfinite(n) for n in numbers)
        values.setdefault(probe, {}).setdefault(layer, {})[metric] = math.fsum(numbers) / len(numbers) if whole \
            else None
    failures, seen = [], set()
    for failure in (f for o in outcomes for f in o.failures):
        if (failure.probe, failure.layer) not in seen:
            seen.add((failure.probe, failure.layer))
            failures.append(failure)
    return ProbeOutcome(values=values, failures=failures, notes=outcomes[0].notes,
                        sample_sets=[o.values for o in outcomes])


def _keys(outcomes: Sequence[ProbeOutcome]) -> list[tuple[str, str, str]]:
    """Every (probe, layer, metric) any set has, in the order the sets first give them."""
    keys: dict[tuple[str, str, str], None] = {}
    for outcome in outcomes:
        for probe, layers in outcome.values.items():
            for layer, metrics in layers.items():
                keys.update(dict.fromkeys((probe, layer, metric) for metric in metrics))
    return list(keys)


class PendingSets:
    """The pending outcomes of one run's sample sets, read as one (:func:`mean_over_sets`)."""

    def __init__(self, pending: Sequence[PendingOutcome]) -> None:
        self._pending = list(pending)

    def done(self) -> bool:
        """Whether every set's numbers are in."""
        return all(p.done() for p in self._pending)

    def result(self) -> ProbeOutcome:
        """The run's outcome over its sets (waits for the workers)."""
        return mean_over_sets([p.result() for p in self._pending])
