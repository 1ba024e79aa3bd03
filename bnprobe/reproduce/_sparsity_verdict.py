"""(a1) Does removing BN change sparsity?

Per layer, ``channel_sparsity`` of the ``sparsity`` probe as the seed-paired difference ``bn - other``.
A layer *differs* when its Holm-adjusted p-value that ``|difference| >`` :data:`SPARSITY_THRESHOLD`
is below 0.05 (the family: every layer), i.e. its interval lies wholly beyond the threshold even
after the correction; it is *alike* when its 95% interval lies wholly inside ``±threshold`` (TOST);
otherwise *unclear*.  HOLDS when some layer differs, DOES NOT HOLD when every layer is alike (an
intersection-union test: no adjustment), UNDECIDED otherwise.
"""

from __future__ import annotations

from bnprobe.report import ALPHA, HOLM, MARGIN_TESTS, Results, p_beyond, p_inside, seeds_for
from bnprobe.reproduce._verdict import (
    ALIKE,
    DIFFERS,
    UNCLEAR,
    SeedsNeeded,
    Verdict,
    claims,
    fastest_route,
    interval_text,
    layer_estimates,
    layer_list,
    significant,
)

SPARSITY_THRESHOLD = 0.05
"""A sparsity difference that matters: five percentage points of zero activations."""


def sparsity_change_verdict(results: Results, variant: str = "identity",
                            threshold: float = SPARSITY_THRESHOLD) -> Verdict:
    """(a1): removing BN changes channel sparsity in some layer by more than ``threshold`` (module docstring)."""
    finding = "removing BN changes representational sparsity"
    rule = (f"per layer, channel_sparsity bn - {variant} paired by seed: differs if |diff| > {threshold} at "
            f"Holm-adjusted p < {ALPHA:.2f} over the layers (the interval wholly beyond ±{threshold}), alike if "
            f"the 95% interval lies inside ±{threshold}; HOLDS if some layer differs, DOES NOT HOLD if every layer "
            "is alike")
    estimates = layer_estimates(results, "sparsity", "channel_sparsity", variant)
    if not estimates:
        return Verdict("a1", finding, None, rule, f"no paired sparsity numbers for bn and {variant}")
    raw = {DIFFERS: {layer: p_beyond(e, threshold) for layer, (e, _) in estimates.items()},
           ALIKE: {layer: p_inside(e, threshold) for layer, (e, _) in estimates.items()}}
    adjusted = {DIFFERS: claims({DIFFERS: raw[DIFFERS]})[DIFFERS], ALIKE: raw[ALIKE]}
    readings = {layer: DIFFERS if significant(adjusted[DIFFERS][layer])
                else ALIKE if significant(adjusted[ALIKE][layer]) else UNCLEAR for layer in estimates}
    holds = True if DIFFERS in readings.values() else False if all(r == ALIKE for r in readings.values()) else None

    def described(layer: str) -> str:
        direction = "sparser" if estimates[layer][0].value > 0 else "denser"
        return f"{layer} bn {direction} {interval_text(estimates[layer][1])}"

    differ = [layer for layer, r in readings.items() if r == DIFFERS]
    parts = [f"{len(differ)} of {len(readings)} layers differ" + (f": {layer_list(readings, DIFFERS, described)}"
                                                                  if differ else "")]
    parts += [f"{name}: {layer_list(readings, name)}" for name in (ALIKE, UNCLEAR) if name in readings.values()]
    needed = None if holds is not None else _seeds_needed(estimates, threshold)
    numbers = {"metric": "channel_sparsity", "difference": f"bn - {variant}", "tests": MARGIN_TESTS,
               "correction": f"{DIFFERS}: {HOLM}; {ALIKE}: intersection-union over the layers, unadjusted",
               "threshold": threshold,
               "layers": {layer: {**interval, **estimate.to_dict(), "p_differs": raw[DIFFERS][layer],
                                  "p_differs_holm": adjusted[DIFFERS][layer], "p_alike": raw[ALIKE][layer],
                                  "reading": readings[layer]}
                          for layer, (estimate, interval) in estimates.items()}}
    return Verdict("a1", finding, holds, rule, "; ".join(parts), numbers, needed)


def _seeds_needed(estimates: dict, threshold: float) -> SeedsNeeded:
    """Toward HOLDS: the layer that would differ first, at the Bonferroni level Holm's first step needs;
    toward DOES NOT HOLD: every layer alike, at 0.05 each."""
    spreads = {layer: e.spread for layer, (e, _) in estimates.items()}
    level = ALPHA / len(estimates)
    differ = [seeds_for(abs(e.value) - threshold, spreads[layer], level) for layer, (e, _) in estimates.items()]
    alike = [seeds_for(e.value, spreads[layer], tost_margin=threshold) for layer, (e, _) in estimates.items()]
    routes = {"toward HOLDS": min((s for s in differ if s is not None), default=None),
              "toward DOES NOT HOLD": None if None in alike else max(alike)}
    return fastest_route(routes, f"no layer's observed difference lies clearly beyond ±{threshold}, and not every "
                         "one clearly inside it (or the differences do not vary)")
