"""Verdicts on the findings of Potgieter, Mouton & Davel (2025): what they share.

The paper concludes that BatchNorm's effect on sparsity *is not a significant factor affecting
generalisation*, and that BN gives *more advantageous clustering characteristics*.  Three verdicts
test that (:mod:`bnprobe.reproduce._sparsity_verdict` (a1), :mod:`~bnprobe.reproduce._generalisation_verdict`
(a2), :mod:`~bnprobe.reproduce._clustering_verdict` (b)).  Each compares ``bn`` with one BN-free
variant layer by layer and reads every layer *against a margin* that matters, with the tests of
:mod:`bnprobe.report._inference`:

* a layer's claim (*differs*, *better*, ...) needs its Holm-adjusted p-value below 0.05 over the
  family of layers (and targets) the verdict combines, so that the chance of any false claim in the
  verdict is at most 5%;
* a claim about *every* layer (every layer alike) is an intersection-union test at 0.05, unadjusted;
* fewer than 3 seeds, or differences that do not vary, never decide a layer.

Each verdict is HOLDS, DOES NOT HOLD or UNDECIDED (``holds`` None), carries the numbers behind it
(:attr:`Verdict.numbers`) and, when undecided, how many seeds per variant would likely decide it
(:attr:`Verdict.seeds_needed`, with the reason when no count up to 1,000 would).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bnprobe._common import REFERENCE_VARIANT
from bnprobe._hints import option
from bnprobe.report import (
    ALPHA,
    Difference,
    Estimate,
    Results,
    holm,
    paired_difference,
    seed_values,
    spread_sources,
)

DIFFERS, ALIKE, UNCLEAR = "differs", "alike", "unclear"
BETTER, NOT_BETTER = "bn better", "bn not better"


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds per variant that would likely decide an undecided verdict (``seeds`` None: no count would, ``why``)."""

    seeds: int | None
    route: str | None = None
    why: str | None = None

    def line(self) -> str:
        """``--seeds 9 would likely decide this (toward HOLDS)`` or why no seed count would."""
        if self.seeds is not None:
            return (f"{option('seeds', self.seeds)} would likely decide this ({self.route}; 80% power at the observed "
                    "effect)")
        return f"no seed count up to 1000 would likely decide this: {self.why}"


@dataclass(frozen=True)
class Verdict:
    """One finding (``key`` "a1", "a2" or "b"), whether the numbers support it, the rule and the evidence.

    ``holds`` is True / False / None (undecided); ``numbers`` are the estimates, tests and intervals the
    rule read, as plain data, so that a reader can check the verdict; ``needed`` is None once decided.
    """

    key: str
    finding: str
    holds: bool | None
    rule: str
    evidence: str
    numbers: dict = field(default_factory=dict)
    needed: SeedsNeeded | None = None

    @property
    def seeds_needed(self) -> int | None:
        """Seeds per variant that would likely decide this verdict; None when decided or out of reach."""
        return self.needed.seeds if self.needed else None

    def to_dict(self) -> dict:
        needed = self.needed
        return {"key": self.key, "finding": self.finding, "holds": self.holds, "rule": self.rule,
                "evidence": self.evidence, "numbers": self.numbers, "seeds_needed": needed.seeds if needed else None,
                "seeds_needed_route": needed.route if needed else None,
                "seeds_needed_reason": needed.why if needed else None}


def layer_estimates(results: Results, probe: str, metric: str, variant: str,
                    reference: str = REFERENCE_VARIANT) -> dict[str, tuple[Estimate, dict]]:
    """Per layer with seed-paired numbers, the :class:`Estimate` of ``reference - variant`` and its 95%
    interval as plain data (:func:`bnprobe.report.paired_difference`), in layer order; with several
    sample sets per seed, the interval also says where the difference's spread comes from (``spread``,
    :func:`bnprobe.report.spread_sources`)."""
    out: dict[str, tuple[Estimate, dict]] = {}
    for layer in results.layers:
        ours = seed_values(results, probe, layer, metric, reference)
        theirs = seed_values(results, probe, layer, metric, variant)
        differences = [v - theirs[s] for s, v in sorted(ours.items()) if v is not None and theirs.get(s) is not None]
        if differences:
            interval = paired_difference(ours, theirs).to_dict()
            sources = spread_sources(results, probe, layer, metric, variant, reference)
            out[layer] = (Estimate.of_differences(differences),
                          interval if sources is None else {**interval, "spread": sources.to_dict()})
    return out


def claims(tests: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """``{claim: {layer: Holm-adjusted p}}`` for ``{claim: {layer: p}}``: each claim's layers one family."""
    return {claim: holm(pvalues) for claim, pvalues in tests.items()}


def significant(p: float | None) -> bool:
    """Whether a (Holm-adjusted) p-value makes its claim: below :data:`ALPHA`, and there at all."""
    return p is not None and p < ALPHA


def kth_smallest(values: list[int | None], k: int) -> int | None:
    """The ``k``-th smallest of the known ``values`` (1-based), None when fewer than ``k`` are known."""
    known = sorted(v for v in values if v is not None)
    return known[k - 1] if len(known) >= k else None


def fastest_route(routes: Mapping[str, int | None], why: str) -> SeedsNeeded:
    """The route (``"toward HOLDS"`` ...) that needs the fewest seeds; ``why`` when none can."""
    reachable = {route: seeds for route, seeds in routes.items() if seeds is not None}
    if not reachable:
        return SeedsNeeded(None, why=why)
    route = min(reachable, key=reachable.__getitem__)
    return SeedsNeeded(reachable[route], route)


def interval_text(numbers: Mapping) -> str:
    """``+0.197 [+0.146, +0.247]`` for an interval's plain data: the estimate and its interval, printed alike."""
    return str(Difference(numbers["estimate"], numbers["low"], numbers["high"], numbers["n"])).removesuffix(" *")


def layer_list(readings: Mapping[str, str], reading: str, describe: Callable[[str], str] = str) -> str:
    """The layers that read ``reading``, described and joined (``""`` for none)."""
    return ", ".join(describe(layer) for layer, r in readings.items() if r == reading)
