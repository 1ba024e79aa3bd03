"""The verdicts' rules on crafted results whose answer is known: margins, Holm, zero spread, seeds needed."""

import json
import math

import numpy as np
import pytest
from scipy.stats import nct
from scipy.stats import t as student_t

from bnprobe._hints import command_line_in_use
from bnprobe.cli.reproduce import verdict_lines
from bnprobe.report import Results, RunResult, paired_difference
from bnprobe.report._inference import Estimate, holm, p_above, p_beyond, p_inside, seeds_for
from bnprobe.reproduce import clustering_verdict, generalisation_verdict, sparsity_change_verdict
from bnprobe.reproduce._generalisation_verdict import run_sparsity, within_slope

JITTER = 0.005
"""Per-seed offsets around 0, JITTER apart: three seed pairs' 95% half-width is t(2) * JITTER / sqrt(3)."""
HALF = student_t.ppf(0.975, 2) * JITTER / math.sqrt(3)  # 0.0124


def _results(runs):
    """runs: [(variant, seed, probes, train_accuracy, test_accuracy)]; layers l0, l1, ... as the probes name them."""
    layers = sorted({layer for _, _, probes, _, _ in runs for numbers in probes.values() for layer in numbers},
                    key=lambda name: int(name[1:]))
    return Results("cnn4", "mnist", {}, [RunResult(v, s, train, test, 0.1, probes=probes)
                                         for v, s, probes, train, test in runs], layers=layers)


def _paired(probe, differences, base=0.5, seeds=3, jitter=JITTER, extra=None):
    """Seeds of bn and identity whose ``probe`` metrics differ (bn - identity) by ``differences``
    {metric: [per layer]} plus the seed's offset (jitter * (seed - middle)); ``extra`` {metric: value}
    is filed unchanged for both."""
    runs = []
    for seed in range(seeds):
        offset = (seed - (seeds - 1) / 2) * jitter
        for variant, shift in (("bn", 1.0), ("identity", 0.0)):
            numbers: dict[str, dict] = {}
            for metric, per_layer in differences.items():
                for i, d in enumerate(per_layer):
                    numbers.setdefault(f"l{i}", {})[metric] = base + shift * (d + offset)
                    numbers[f"l{i}"].update(extra or {})
            runs.append((variant, seed, {probe: numbers}, 1.0, 0.9))
    return _results(runs)


# --------------------------------------------------------------------------------------------------
# The tests and their correction

def test_margin_tests_decide_exactly_when_the_interval_clears_the_bound():
    differences = [0.10, 0.11, 0.12]
    estimate = Estimate.of_differences(differences)
    interval = paired_difference(dict(enumerate(differences)), dict.fromkeys(range(3), 0.0))
    for bound in (interval.low - 1e-6, interval.low + 1e-6):
        assert (p_above(estimate, bound) < 0.05) == (interval.low > bound)
    assert p_beyond(estimate, 0.05) < 0.05 and p_inside(estimate, 0.05) == pytest.approx(1.0)
    assert p_inside(Estimate.of_differences([0.0, 0.001, -0.001]), 0.05) < 0.05


def test_two_seeds_or_no_spread_never_decide_and_are_never_starred():
    assert Estimate.of_differences([0.3, 0.3, 0.3]).why.startswith("the per-seed differences do not vary")
    assert Estimate.of_differences([0.3, 0.4]).why == "2 seed pairs: at least 3 are needed"
    assert p_above(Estimate.of_differences([0.3, 0.3, 0.3]), 0.0) is None
    same = paired_difference({0: -1.0, 1: -1.0}, {0: 0.0, 1: 0.0})  # docs' "-1.000 [-1.000, -1.000] *"
    assert (same.low, same.high) == (-1.0, -1.0) and not same.excludes_zero and "*" not in str(same)
    two = paired_difference({0: 1.0, 1: 1.1}, {0: 0.0, 1: 0.0})
    assert two.low > 0 and not two.excludes_zero  # an interval clear of 0, from one degree of freedom
    verdict = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [-1.0, -1.0]}, seeds=2, jitter=0.0))
    assert verdict.holds is None
    assert {layer["reading"] for layer in verdict.numbers["layers"].values()} == {"unclear"}
    assert verdict.numbers["layers"]["l0"]["untestable"] == "2 seed pairs: at least 3 are needed"


def test_holm_matches_the_step_down_by_hand_and_counts_untestable_members():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    # ranks a < c < b < d(=1): 4 * 0.01, max(0.04, 3 * 0.03), max(0.09, 2 * 0.04)
    assert adjusted == {"a": pytest.approx(0.04), "c": pytest.approx(0.09), "b": pytest.approx(0.09), "d": None}


def test_holm_keeps_one_borderline_layer_among_many_from_deciding_a1():
    # layer l0 differs by 0.11 (beyond 0.05 by 0.06) with jitter 0.02: unadjusted p ~ 0.035, ten layers
    differences = [0.11] + [0.0] * 9
    res = _paired("sparsity", {"channel_sparsity": differences}, jitter=0.02)
    verdict = sparsity_change_verdict(res)
    l0 = verdict.numbers["layers"]["l0"]
    assert l0["p_differs"] < 0.05 < l0["p_differs_holm"]  # an unadjusted rule would call it
    assert l0["reading"] == "unclear" and verdict.holds is None
    assert l0["p_differs_holm"] == pytest.approx(min(1.0, 10 * l0["p_differs"]))  # the smallest p: times m
    alone = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.11]}, jitter=0.02))
    assert alone.holds is True  # the same layer on its own is a difference


# --------------------------------------------------------------------------------------------------
# (a1)

def test_a1_names_the_layers_that_differ_and_in_which_direction():
    verdict = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, -0.2, 0.1]}))
    assert verdict.key == "a1" and verdict.holds is True and verdict.needed is None
    assert "2 of 3 layers differ: l1 bn denser -0.200 [" in verdict.evidence
    assert "l2 bn sparser +0.100" in verdict.evidence and "alike: l0" in verdict.evidence
    layers = verdict.numbers["layers"]
    assert [layers[f"l{i}"]["reading"] for i in range(3)] == ["alike", "differs", "differs"]
    assert layers["l1"]["low"] == pytest.approx(-0.2 - HALF) and verdict.numbers["threshold"] == 0.05
    assert "Holm" in verdict.numbers["correction"] and "Holm" in verdict.rule


def test_a1_does_not_hold_when_every_interval_is_inside_the_band_and_is_undecided_between():
    alike = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, 0.01, -0.01]}))
    assert alike.holds is False and alike.evidence == "0 of 3 layers differ; alike: l0, l1, l2"
    # 0.06 ± 0.012 excludes 0 and exceeds 0.05, but its interval reaches inside the band: not a difference
    small = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, 0.06]}))
    assert small.holds is None and small.numbers["layers"]["l1"]["reading"] == "unclear"
    assert small.seeds_needed is not None and small.seeds_needed > 3
    missing = sparsity_change_verdict(_paired("hdbscan", {"ari": [0.1]}))
    assert missing.holds is None and "no paired sparsity numbers" in missing.evidence


def test_seeds_needed_matches_the_textbook_paired_t_power():
    # paired t test, effect size d = effect / sd, two-sided 0.05, 80% power: d = 1 needs 10 pairs, d = 0.5
    # needs 34 (Cohen's tables; G*Power's 'means: difference from constant')
    assert seeds_for(1.0, 1.0) == 10 and seeds_for(0.5, 1.0) == 34
    for n in (9, 10):  # and by hand: the noncentral t's power just below and at the answer
        power = nct.sf(student_t.isf(0.025, n - 1), n - 1, math.sqrt(n))
        assert (power >= 0.8) == (n == 10)
    assert seeds_for(-0.1, 1.0) is None and seeds_for(0.1, 0.0) is None


def test_a1_seeds_needed_is_the_power_of_its_best_layer_at_the_bonferroni_level():
    # two layers: l1 differs by 0.07 (0.02 beyond the threshold) with a spread that 3 seeds cannot resolve
    res = _paired("sparsity", {"channel_sparsity": [0.2, 0.07]}, jitter=0.02)
    verdict = sparsity_change_verdict(res)
    assert verdict.holds is True  # l0 decides; nothing needed
    res = _paired("sparsity", {"channel_sparsity": [0.07, 0.0]}, jitter=0.02)
    verdict = sparsity_change_verdict(res)
    assert verdict.holds is None
    spread = float(np.std([-0.02, 0.0, 0.02], ddof=1))
    assert verdict.seeds_needed == seeds_for(0.02, spread, 0.05 / 2)
    assert verdict.to_dict()["seeds_needed_route"] == "toward HOLDS"
    assert f"seeds={verdict.seeds_needed} would likely decide this" in " ".join(verdict_lines(verdict))  # Python
    with command_line_in_use():
        assert f"--seeds {verdict.seeds_needed} would likely decide this" in " ".join(verdict_lines(verdict))


# --------------------------------------------------------------------------------------------------
# (b)

def test_b_finds_a_real_difference_in_the_primary_metric_and_ignores_the_descriptors():
    # ari better by 0.1 at every layer; purity and noise_fraction say the opposite: they do not vote
    verdict = clustering_verdict(_paired("hdbscan", {"ari": [0.1] * 3, "purity": [-0.2] * 3,
                                                     "noise_fraction": [0.3] * 3}))
    assert verdict.key == "b" and verdict.holds is True and verdict.numbers["primary"] == "ari"
    assert {layer["reading"] for layer in verdict.numbers["layers"].values()} == {"bn better"}
    assert verdict.numbers["descriptors"]["purity"]["l0"]["estimate"] == pytest.approx(-0.2)
    assert "better at 3, not better at 0, unclear at 0 of 3 layers" in verdict.evidence


def test_b_does_not_hold_when_bn_is_no_better_and_finds_nothing_in_noise():
    equal = clustering_verdict(_paired("hdbscan", {"ari": [0.0] * 3}, seeds=5))  # 0 ± 0.004: below the margin
    assert equal.holds is False
    noisy = clustering_verdict(_paired("hdbscan", {"ari": [0.03] * 3}, jitter=0.05))
    assert noisy.holds is None and noisy.needed is not None


def test_b_needs_a_majority_of_layers():
    verdict = clustering_verdict(_paired("hdbscan", {"ari": [0.1, 0.1, 0.0, 0.0]}))
    assert verdict.holds is None  # 2 better, 2 not better of 4: a decision needs 3
    assert "a decision needs 3" in verdict.evidence


def test_b_carries_the_chance_level_of_each_layer():
    chance = {"ari_chance_mean": 0.001, "ari_chance_std": 0.002, "ari_chance_p": 0.005}
    verdict = clustering_verdict(_paired("hdbscan", {"ari": [0.1] * 2}, extra=chance))
    level = verdict.numbers["layers"]["l0"]["chance"]
    assert level == {"mean": pytest.approx(0.001), "std": pytest.approx(0.002), "p": 0.005, "runs": 6}
    at_chance = clustering_verdict(_paired("hdbscan", {"ari": [0.1] * 2}, extra={**chance, "ari_chance_p": 0.3}))
    assert "no better than chance (permutation p >= 0.05) in some run at l0, l1" in at_chance.evidence


# --------------------------------------------------------------------------------------------------
# (a2)

def _gap_study(seeds, deviation, gap_of, offset=0.1):
    """Runs of bn and identity whose sparsity (one layer) is 0.5 + deviation(seed) for bn and
    0.5 - offset + deviation(seed + 1) for identity, and whose generalisation gap is
    gap_of(variant, seed, sparsity); train accuracy 1.0."""
    runs = []
    for variant, shift, turn in (("bn", 0.0, 0), ("identity", -offset, 1)):
        for seed in range(seeds):
            sparsity = 0.5 + shift + deviation(seed + turn)
            gap = gap_of(variant, seed, sparsity)
            runs.append((variant, seed, {"sparsity": {"l0": {"channel_sparsity": sparsity}}}, 1.0, 1.0 - gap))
    return _results(runs)


def _deviation(seed):
    return 0.01 * ((seed * 7) % 5 - 2)


def _noise(seed):
    return 0.002 * ((seed * 3) % 4 - 1.5)


def test_a2_does_not_hold_when_bns_sparsity_change_moves_the_gap():
    # gap = 0.5 * sparsity: bn's +0.1 sparsity accounts for +0.05 of gap, far beyond 0.01
    verdict = generalisation_verdict(_gap_study(6, _deviation, lambda v, s, x: 0.5 * x + _noise(s)))
    assert verdict.key == "a2" and verdict.holds is False
    assert verdict.numbers["explained_gap"]["estimate"] == pytest.approx(0.05, abs=0.01)
    assert verdict.numbers["slope"]["estimate"] == pytest.approx(0.5, abs=0.1)


def test_a2_holds_when_the_slope_is_flat_and_many_seeds_pin_it_down():
    verdict = generalisation_verdict(_gap_study(16, _deviation, lambda v, s, x: 0.03 + _noise(s)))
    assert verdict.holds is True and abs(verdict.numbers["explained_gap"]["estimate"]) < 0.01
    assert verdict.numbers["p_inside"] < 0.05


def test_a2_is_undecided_with_three_noisy_seeds_and_says_how_many_would_do():
    verdict = generalisation_verdict(_gap_study(3, _deviation, lambda v, s, x: 0.03 + 5 * _noise(s)))
    assert verdict.holds is None and verdict.needed is not None
    assert verdict.seeds_needed is None or verdict.seeds_needed > 3


def test_within_slope_centres_each_variant():
    # two variants far apart: pooled the slope is steep; within them it is 0
    slope = within_slope([0, 1, 0, 1, 10, 11, 10, 11], [0, 0, 1, 1, 10, 10, 11, 11], list("aaaabbbb"))
    assert slope.value == pytest.approx(0.0) and slope.df == 8 - 2 - 1


def test_a2_reads_the_compared_variants_only_and_the_layers_every_run_has():
    res = _results([("bn", 0, {"sparsity": {"l0": {"channel_sparsity": 0.2}, "l1": {"channel_sparsity": 0.4}}},
                     1.0, 0.9),
                    ("identity", 0, {"sparsity": {"l0": {"channel_sparsity": 0.6}}}, 1.0, 0.8),
                    ("identity", 1, {"sparsity": {"l0": {"channel_sparsity": 0.9}}}, 1.0, None),
                    ("init", 0, {"sparsity": {"l0": {"channel_sparsity": 0.5}}}, 0.1, 0.1)])
    rows = run_sparsity(res, ("bn", "identity"))
    assert [(row["variant"], row["sparsity"]) for row in rows] == [("bn", 0.2), ("identity", 0.6)]  # l0 only
    assert rows[0]["generalisation_gap"] == pytest.approx(0.1)
    assert generalisation_verdict(res).holds is None
    assert generalisation_verdict(_paired("hdbscan", {"ari": [0.1]})).holds is None


# --------------------------------------------------------------------------------------------------
# As saved and printed

def test_verdicts_are_plain_data_and_print_within_80_columns():
    verdicts = [sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, -0.2, 0.1]})),
                generalisation_verdict(_gap_study(3, _deviation, lambda v, s, x: 0.03 + 5 * _noise(s))),
                clustering_verdict(_paired("hdbscan", {"ari": [0.03] * 3}, jitter=0.05))]
    for verdict in verdicts:
        saved = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
        assert saved["key"] == verdict.key and saved["numbers"] == verdict.numbers and saved["rule"]
        assert saved["seeds_needed"] == verdict.seeds_needed
        lines = verdict_lines(verdict)
        assert all(len(line) <= 80 for line in lines)
        assert lines[0].startswith(f"  ({verdict.key}) {verdict.finding}: ")
        text = " ".join(line.strip() for line in lines[1:])
        assert text.startswith(f"rule: {verdict.rule} evidence: {verdict.evidence}")
        assert ("seeds: " in text) == (verdict.needed is not None)
