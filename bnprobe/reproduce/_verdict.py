"""Verdicts on the findings of Potgieter, Mouton & Davel (2025), derived from a study's numbers.

The paper concludes that BatchNorm's effect on sparsity *is not a significant factor affecting
generalisation*, and that BN gives *more advantageous clustering characteristics*.  Three verdicts
test that, each keyed for comparison across settings (:attr:`Verdict.key`).  (a1) and (b) compare
``bn`` with one BN-free variant (``identity`` by default) per layer, as the seed-paired difference
``bn - other`` with its 95% interval (:func:`bnprobe.report.paired_difference`):

* **a1 -- removing BN changes sparsity.**  ``channel_sparsity`` of the ``sparsity`` probe.  A layer
  *differs* when its interval excludes 0 and ``|difference| >`` :data:`SPARSITY_THRESHOLD`, and is
  *alike* when its whole interval lies inside ``±``:data:`SPARSITY_THRESHOLD`.  HOLDS when some
  layer differs, DOES NOT HOLD when every layer is alike, UNDECIDED otherwise.
* **a2 -- sparsity is not a significant factor affecting generalisation.**  Over every run of the
  study (all variants and seeds), the Pearson correlation of the run's sparsity (the mean over
  layers of ``channel_sparsity``; per layer as evidence) with its generalisation gap (train minus
  test accuracy) and with its test accuracy, *within variants*: each variant centred on its own
  means, so that what BN does to both does not count as sparsity explaining the gap (the correlation
  across variants, which does count it, and each variant's own are reported beside it).  Fisher z
  intervals (:func:`bnprobe.report.correlation`).  DOES NOT HOLD when either within-variant interval
  excludes 0; HOLDS when both lie inside ``±``:data:`STRONG_CORRELATION` (a strong relation is
  ruled out); UNDECIDED otherwise -- with 4 seeds of 2 variants the intervals are too wide to rule
  out a strong relation, so it cannot HOLD.
* **b -- BN representations cluster better.**  The metrics of :data:`CLUSTERING_METRICS` of the
  ``hdbscan`` probe that the study has.  Per layer, bn's *advantage* (the difference, sign flipped
  for a metric where lower is better) is *better* when its interval lies above 0 and the advantage
  exceeds :data:`CLUSTERING_MARGIN`, and *not better* when its interval lies below the margin (bn
  is worse, or at most negligibly better).  A metric says "bn better" (or "not better") when more
  than half of its layers do, and is undecided otherwise.  HOLDS when at least half of the metrics
  decide and they all say "bn better"; DOES NOT HOLD when they all say "not better"; UNDECIDED when
  too few decide or they disagree (the evidence names which).

A verdict is UNDECIDED (``holds`` None) when the numbers it needs are missing.  Each carries the
numbers behind it (:attr:`Verdict.numbers`: per layer / metric, every estimate and interval).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.report import seed_values
from bnprobe.report._results import Results
from bnprobe.report._stats import CORRELATION_METHOD, PAIRED_METHOD, Difference, correlation, paired_difference

SPARSITY_THRESHOLD = 0.05
"""A sparsity difference that matters: five percentage points of zero activations (a1)."""
STRONG_CORRELATION = 0.5
"""A strong relation (Cohen's "large" r); a2 holds when the intervals rule it out."""
CLUSTERING_MARGIN = 0.02
"""An advantage in a clustering metric that is negligible (b): NMI, purity and the noise fraction lie in
0-1, ARI and DBCV at most 1 (below 0, they say worse than chance, and DBCV reaches -1); 0.02 is small
on each."""
CLUSTERING_METRICS: dict[str, int] = {"ari": 1, "nmi": 1, "purity": 1, "noise_fraction": -1, "dbcv": 1}
"""The ``hdbscan`` metrics (b) judges: +1 where higher is better, -1 where lower is."""

DIFFERS, ALIKE, UNCLEAR = "differs", "alike", "unclear"
BETTER, NOT_BETTER, UNDECIDED = "bn better", "bn not better", "undecided"
GAP, TEST = "generalisation_gap", "test_accuracy"


@dataclass(frozen=True)
class Verdict:
    """One finding (``key`` "a1", "a2" or "b"), whether the numbers support it, the rule and the evidence.

    ``holds`` is True / False / None (undecided); ``numbers`` are the estimates and intervals the
    rule read, as plain data, so that a reader can check the verdict.
    """

    key: str
    finding: str
    holds: bool | None
    rule: str
    evidence: str
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"key": self.key, "finding": self.finding, "holds": self.holds, "rule": self.rule,
                "evidence": self.evidence, "numbers": self.numbers}


def layer_differences(results: Results, probe: str, metric: str, variant: str,
                      reference: str = REFERENCE_VARIANT) -> dict[str, Difference]:
    """``{layer: reference - variant}`` of ``metric``, paired by seed with its interval, in layer order."""
    out: dict[str, Difference] = {}
    for layer in results.layers:
        difference = paired_difference(seed_values(results, probe, layer, metric, reference),
                                       seed_values(results, probe, layer, metric, variant))
        if difference is not None:
            out[layer] = difference
    return out


def _layer_numbers(differences: dict[str, Difference], readings: dict[str, str]) -> dict[str, dict]:
    return {layer: {**d.to_dict(), "reading": readings[layer]} for layer, d in differences.items()}


def _interval(d: Difference) -> str:
    """``+0.197 [+0.146, +0.247]``: the estimate and its interval, printed alike."""
    return str(d).removesuffix(" *")


# --------------------------------------------------------------------------------------------------
# (a1) does removing BN change sparsity?

def sparsity_change_reading(difference: Difference, threshold: float = SPARSITY_THRESHOLD) -> str:
    """:data:`DIFFERS`, :data:`ALIKE` or :data:`UNCLEAR` for one layer's paired difference (module docstring)."""
    if difference.excludes_zero and abs(difference.estimate) > threshold:
        return DIFFERS
    if difference.low is not None and difference.high is not None \
            and -threshold < difference.low and difference.high < threshold:
        return ALIKE
    return UNCLEAR


def sparsity_change_verdict(results: Results, variant: str = "identity",
                            threshold: float = SPARSITY_THRESHOLD) -> Verdict:
    """(a1): removing BN changes channel sparsity in some layer by more than ``threshold``."""
    finding = "removing BN changes representational sparsity"
    rule = (f"per layer, channel_sparsity bn - {variant}, seed-paired 95% interval: differs if it excludes 0 "
            f"and |diff| > {threshold}, alike if inside ±{threshold}; HOLDS if some layer differs, DOES NOT "
            "HOLD if all are alike")
    diffs = layer_differences(results, "sparsity", "channel_sparsity", variant)
    if not diffs:
        return Verdict("a1", finding, None, rule, f"no paired sparsity numbers for bn and {variant}")
    readings = {layer: sparsity_change_reading(d, threshold) for layer, d in diffs.items()}
    differ = [layer for layer, reading in readings.items() if reading == DIFFERS]
    holds = True if differ else False if all(r == ALIKE for r in readings.values()) else None
    parts = [f"{len(differ)} of {len(diffs)} layers differ"
             + (": " + ", ".join(f"{layer} bn {'sparser' if diffs[layer].estimate > 0 else 'denser'} "
                                 f"{_interval(diffs[layer])}" for layer in differ) if differ else "")]
    for name in (ALIKE, UNCLEAR):
        layers = [layer for layer, reading in readings.items() if reading == name]
        if layers:
            parts.append(f"{name}: {', '.join(layers)}")
    numbers = {"metric": "channel_sparsity", "difference": f"bn - {variant}", "interval": PAIRED_METHOD,
               "threshold": threshold,
               "layers": _layer_numbers(diffs, readings)}
    return Verdict("a1", finding, holds, rule, "; ".join(parts), numbers)


# --------------------------------------------------------------------------------------------------
# (a2) does sparsity explain generalisation?

def run_sparsity(results: Results, probe: str = "sparsity", metric: str = "channel_sparsity") -> list[dict]:
    """Every run with a test accuracy and ``metric`` numbers, at every layer that all such runs have.

    One row per run: ``variant``, ``seed``, ``layers`` ({layer: sparsity}), ``sparsity`` (their mean),
    ``generalisation_gap`` (train - test accuracy) and ``test_accuracy``.  Rows compare the same
    layers, so a run missing one layer does not shift the others' mean.  A run with no ``metric`` at
    all (diverged, so not probed, or its probe failed) is left out, not allowed to empty ``common``.
    """
    runs = [run for run in results.runs if run.test_accuracy is not None
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


def _correlations(x: list[float], y: list[float], variants: list[str]) -> dict:
    """Correlation of ``x`` and ``y`` within variants (each centred), across them (all runs together) and
    in each variant alone, as plain data."""
    def plain(d: Difference | None) -> dict | None:
        return d.to_dict() if d else None

    per_variant = {v: plain(correlation([a for a, w in zip(x, variants, strict=True) if w == v],
                                        [b for b, w in zip(y, variants, strict=True) if w == v]))
                   for v in dict.fromkeys(variants)}
    return {"within": plain(correlation(x, y, variants)), "across_variants": plain(correlation(x, y)),
            "per_variant": per_variant}


def _r(numbers: dict | None) -> str:
    if numbers is None:
        return "—"
    return _interval(Difference(numbers["estimate"], numbers["low"], numbers["high"], numbers["n"]))


def generalisation_verdict(results: Results, strong: float = STRONG_CORRELATION) -> Verdict:
    """(a2): a run's sparsity does not track its generalisation, within variants (module docstring)."""
    finding = "sparsity is not a significant factor affecting generalisation"
    rule = ("over all runs, Pearson r of sparsity (mean over layers) with the gap and with test accuracy, "
            f"within variants, Fisher z 95% interval: DOES NOT HOLD if either excludes 0, HOLDS if both lie "
            f"inside ±{strong}")
    rows = run_sparsity(results)
    if not rows:
        return Verdict("a2", finding, None, rule, "no runs with sparsity numbers and a test accuracy")
    variants = [row["variant"] for row in rows]
    overall = {target: _correlations([row["sparsity"] for row in rows], [row[target] for row in rows], variants)
               for target in (GAP, TEST)}
    layers = {layer: {target: _correlations([row["layers"][layer] for row in rows],
                                            [row[target] for row in rows], variants)
                      for target in (GAP, TEST)} for layer in rows[0]["layers"]}
    within = [overall[target]["within"] for target in (GAP, TEST)]
    if any(w is not None and w["excludes_zero"] for w in within):
        holds: bool | None = False
    elif all(w is not None and w["low"] is not None and -strong < w["low"] and w["high"] < strong for w in within):
        holds = True
    else:
        holds = None
    groups = len(set(variants))
    evidence = (f"{len(rows)} runs, {groups} variant{'s' * (groups != 1)}; within variants "
                f"r(gap) {_r(overall[GAP]['within'])}, r(test acc) {_r(overall[TEST]['within'])}; "
                f"across variants r(gap) {_r(overall[GAP]['across_variants'])}, "
                f"r(test acc) {_r(overall[TEST]['across_variants'])}")
    if any(w is None for w in within):
        evidence += "; sparsity or accuracy does not vary within a variant"
    strongest = _strongest_layer(layers)
    if strongest and len(layers) > 1:
        evidence += f"; strongest layer within variants: {strongest}"
    numbers = {"correlation": CORRELATION_METHOD, "strong": strong, "sparsity": "mean over layers of channel_sparsity",
               "overall": overall, "layers": layers,
               "runs": [{k: row[k] for k in ("variant", "seed", "sparsity", GAP, TEST)} for row in rows]}
    return Verdict("a2", finding, holds, rule, evidence, numbers)


def _strongest_layer(layers: dict[str, dict]) -> str | None:
    """``layer r(target) ...`` for the layer whose within-variant correlation is largest in size."""
    found = [(abs(c["estimate"]), layer, target) for layer, targets in layers.items()
             for target, correlations in targets.items() if (c := correlations["within"]) is not None]
    if not found:
        return None
    _, layer, target = max(found)
    name = "gap" if target == GAP else "test acc"
    return f"{layer} r({name}) {_r(layers[layer][target]['within'])}"


# --------------------------------------------------------------------------------------------------
# (b) do BN representations cluster better?

def advantage_reading(advantage: Difference, margin: float = CLUSTERING_MARGIN) -> str:
    """:data:`BETTER`, :data:`NOT_BETTER` or :data:`UNCLEAR` for bn's advantage at one layer (module docstring)."""
    if advantage.low is None or advantage.high is None:
        return UNCLEAR
    if advantage.low > 0 and advantage.estimate > margin:
        return BETTER
    if advantage.high < margin:
        return NOT_BETTER
    return UNCLEAR


def _oriented(d: Difference, sign: int) -> Difference:
    """``d`` as an advantage: unchanged for +1, negated (interval flipped) for -1."""
    if sign > 0:
        return d
    return Difference(-d.estimate, None if d.high is None else -d.high, None if d.low is None else -d.low, d.n)


def metric_outcome(readings: dict[str, str]) -> str:
    """:data:`BETTER` / :data:`NOT_BETTER` when more than half of the layers read so, else :data:`UNDECIDED`."""
    for outcome in (BETTER, NOT_BETTER):
        if sum(r == outcome for r in readings.values()) > len(readings) / 2:
            return outcome
    return UNDECIDED


def clustering_verdict(results: Results, variant: str = "identity", probe: str = "hdbscan",
                       margin: float = CLUSTERING_MARGIN) -> Verdict:
    """(b): the BN model's representations cluster better, on several metrics (module docstring)."""
    finding = "BN representations cluster better"
    lower = [m for m, s in CLUSTERING_METRICS.items() if s < 0]
    rule = (f"per metric and layer, bn's advantage over {variant} ({', '.join(lower)}: lower is better), "
            f"seed-paired 95% interval: better if above 0 and > {margin}, not better if below {margin}; a metric "
            "decides by a majority of layers; HOLDS (DOES NOT HOLD) if half the metrics or more decide and "
            "all say better (not better)")
    metrics: dict[str, dict] = {}
    for metric, sign in CLUSTERING_METRICS.items():
        diffs = layer_differences(results, probe, metric, variant)
        if diffs:
            readings = {layer: advantage_reading(_oriented(d, sign), margin) for layer, d in diffs.items()}
            metrics[metric] = {"higher_is_better": sign > 0, "outcome": metric_outcome(readings),
                               "layers": _layer_numbers(diffs, readings)}
    if not metrics:
        return Verdict("b", finding, None, rule, f"no paired {probe} numbers for bn and {variant}")
    outcomes = {metric: entry["outcome"] for metric, entry in metrics.items()}
    deciding = {o for o in outcomes.values() if o != UNDECIDED}
    decided = sum(o != UNDECIDED for o in outcomes.values())
    holds = None if len(deciding) != 1 or decided < len(outcomes) / 2 else BETTER in deciding
    evidence = "; ".join(f"{metric} {_metric_summary(entry)}" for metric, entry in metrics.items())
    if len(deciding) > 1:
        evidence += ("; the metrics disagree: bn better on "
                     + ", ".join(m for m, o in outcomes.items() if o == BETTER) + ", not better on "
                     + ", ".join(m for m, o in outcomes.items() if o == NOT_BETTER))
    elif deciding and holds is None:
        evidence += f"; only {decided} of {len(outcomes)} metrics decide"
    numbers = {"probe": probe, "difference": f"bn - {variant}", "interval": PAIRED_METHOD, "margin": margin,
               "metrics": metrics}
    return Verdict("b", finding, holds, rule, evidence, numbers)


def _metric_summary(entry: dict) -> str:
    """``bn better (3 of 4 layers)`` or ``undecided (better 1, not better 1, unclear 2)``."""
    readings = [layer["reading"] for layer in entry["layers"].values()]
    counts = {name: readings.count(name) for name in (BETTER, NOT_BETTER, UNCLEAR)}
    if entry["outcome"] != UNDECIDED:
        return f"{entry['outcome']} ({counts[entry['outcome']]} of {len(readings)} layers)"
    tally = ", ".join(f"{name.removeprefix('bn ')} {n}" for name, n in counts.items() if n)
    return f"undecided ({tally})"
