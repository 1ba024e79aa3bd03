import json
import math

import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from bnprobe.cli.reproduce import verdict_lines
from bnprobe.report import Results, RunResult, correlation
from bnprobe.reproduce._verdict import (
    clustering_verdict,
    generalisation_verdict,
    layer_differences,
    run_sparsity,
    sparsity_change_verdict,
)

JITTER = 0.005
"""Per-seed offsets -JITTER, 0, +JITTER: three seed pairs whose 95% half-width is t(2) * JITTER / sqrt(3)."""
HALF = student_t.ppf(0.975, 2) * JITTER / math.sqrt(3)  # 0.0124


def _results(runs):
    """runs: [(variant, seed, probes, train_accuracy, test_accuracy)]; layers l0, l1, ... as the probes name them."""
    layers = sorted({layer for _, _, probes, _, _ in runs for numbers in probes.values() for layer in numbers})
    return Results("cnn4", "mnist", {}, [RunResult(v, s, train, test, 0.1, probes=probes)
                                         for v, s, probes, train, test in runs], layers=layers)


def _paired(probe, differences, base=0.5, seeds=3):
    """Three seeds of bn and identity whose ``probe`` metrics differ (bn - identity) by ``differences``
    {metric: [per layer]}, plus the seed's offset (-JITTER, 0, +JITTER)."""
    runs = []
    for seed in range(seeds):
        offset = (seed - 1) * JITTER
        for variant, shift in (("bn", 1.0), ("identity", 0.0)):
            numbers: dict[str, dict] = {}
            for metric, per_layer in differences.items():
                for i, d in enumerate(per_layer):
                    numbers.setdefault(f"l{i}", {})[metric] = base + shift * (d + offset)
            runs.append((variant, seed, {probe: numbers}, 1.0, 0.9))
    return _results(runs)


def test_differences_are_seed_paired_with_their_interval():
    res = _paired("sparsity", {"channel_sparsity": [0.0, -0.2]})
    diffs = layer_differences(res, "sparsity", "channel_sparsity", "identity")
    assert diffs["l0"].estimate == pytest.approx(0.0) and diffs["l1"].estimate == pytest.approx(-0.2)
    assert diffs["l1"].high - diffs["l1"].estimate == pytest.approx(HALF) and diffs["l1"].n == 3


def test_correlation_has_the_fisher_interval_and_centres_each_group():
    r = correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert r.estimate == pytest.approx(0.8) and r.n == 5
    half = norm.ppf(0.975) / math.sqrt(5 - 3)
    assert (r.low, r.high) == pytest.approx((math.tanh(math.atanh(0.8) - half), math.tanh(math.atanh(0.8) + half)))
    # two groups far apart: pooled, the groups' means make a strong relation; within them there is none
    x, y, groups = [0, 1, 0, 1, 10, 11, 10, 11], [0, 0, 1, 1, 10, 10, 11, 11], list("aaaabbbb")
    assert correlation(x, y).estimate > 0.9 and correlation(x, y, groups).estimate == pytest.approx(0.0)
    within = correlation(x, y, groups)
    half = norm.ppf(0.975) / math.sqrt(8 - 2 + 1 - 3)  # one degree of freedom per group
    assert within.high == pytest.approx(math.tanh(half))
    assert correlation([1, 1, 1, 1], [1, 2, 3, 4]) is None  # no variation: r is undefined
    assert correlation([1, 2, 3], [1, 3, 2]).low is None  # n_eff 3: no interval


def test_a1_names_the_layers_that_differ_and_in_which_direction():
    verdict = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, -0.2, 0.1]}))
    assert verdict.key == "a1" and verdict.holds is True
    assert "2 of 3 layers differ: l1 bn denser -0.200 [" in verdict.evidence
    assert "l2 bn sparser +0.100" in verdict.evidence
    assert "alike: l0" in verdict.evidence
    layers = verdict.numbers["layers"]
    assert [layers[f"l{i}"]["reading"] for i in range(3)] == ["alike", "differs", "differs"]
    assert layers["l1"]["low"] == pytest.approx(-0.2 - HALF) and verdict.numbers["threshold"] == 0.05


def test_a1_does_not_hold_when_every_interval_is_inside_the_band_and_is_undecided_between():
    alike = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, 0.01, -0.01]}))
    assert alike.holds is False and "0 of 3 layers differ; alike: l0, l1, l2" == alike.evidence
    # 0.04 ± 0.012 excludes 0 but is no larger than 0.05, and reaches past the band: neither
    small = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, 0.04]}))
    assert small.holds is None and small.numbers["layers"]["l1"]["reading"] == "unclear"
    one_seed = sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.3]}, seeds=1))
    assert one_seed.holds is None  # a large difference, but no interval to say it is not seed noise
    missing = sparsity_change_verdict(_paired("hdbscan", {"ari": [0.1]}))
    assert missing.holds is None and "no paired sparsity numbers" in missing.evidence


def _gap_study(seeds, deviation, gap_of, offset=0.3):
    """Runs of bn and identity whose sparsity (one layer) is 0.5 (+offset for identity) + deviation(seed)
    and whose generalisation gap is gap_of(variant, seed, sparsity); train accuracy 1.0."""
    runs = []
    for variant, shift in (("bn", 0.0), ("identity", offset)):
        for seed in range(seeds):
            sparsity = 0.5 + shift + deviation(seed)
            gap = gap_of(variant, seed, sparsity)
            runs.append((variant, seed, {"sparsity": {"l0": {"channel_sparsity": sparsity}}}, 1.0, 1.0 - gap))
    return _results(runs)


def _alternating(seed):
    return 0.01 * (1 if seed % 2 == 0 else -1)


def _orthogonal_gap(variant, seed, sparsity):
    """Seeds' gaps +,+,-,-: uncorrelated with the +,-,+,- sparsity; identity's gaps are all larger."""
    return (0.10 if variant == "identity" else 0.02) + 0.01 * (1 if seed % 4 < 2 else -1)


def test_a2_does_not_hold_when_sparsity_tracks_the_gap_within_variants():
    def tracking(variant, seed, sparsity):
        return 0.05 + 0.5 * (sparsity - 0.5) + 0.001 * (seed % 3)  # noise too small to hide the relation

    verdict = generalisation_verdict(_gap_study(4, lambda s: 0.01 * s, tracking))
    assert verdict.key == "a2" and verdict.holds is False
    within = verdict.numbers["overall"]["generalisation_gap"]["within"]
    assert within["excludes_zero"] and within["estimate"] > 0.9 and within["n"] == 8
    assert verdict.numbers["overall"]["test_accuracy"]["within"]["estimate"] < -0.9  # test = 1 - gap here
    assert "8 runs, 2 variants; within variants r(gap) +0.9" in verdict.evidence


def test_a2_holds_when_many_runs_rule_out_a_strong_relation_within_variants():
    verdict = generalisation_verdict(_gap_study(20, _alternating, _orthogonal_gap))
    assert verdict.holds is True
    overall = verdict.numbers["overall"]["generalisation_gap"]
    assert overall["within"]["estimate"] == pytest.approx(0.0, abs=1e-9) and -0.5 < overall["within"]["low"]
    assert overall["within"]["high"] < 0.5
    # pooled over both variants the relation is strong: it is the variants' difference, not sparsity's
    assert overall["across_variants"]["excludes_zero"] and overall["across_variants"]["estimate"] > 0.9
    assert {row["variant"] for row in verdict.numbers["runs"]} == {"bn", "identity"}
    assert len(verdict.numbers["runs"]) == 40 and set(verdict.numbers["layers"]) == {"l0"}


def test_a2_is_undecided_when_four_seeds_allow_either_answer():
    verdict = generalisation_verdict(_gap_study(4, _alternating, _orthogonal_gap))
    within = verdict.numbers["overall"]["generalisation_gap"]["within"]
    assert within["estimate"] == pytest.approx(0.0, abs=1e-9) and within["low"] < -0.5 and within["high"] > 0.5
    assert verdict.holds is None
    assert set(verdict.numbers["overall"]["generalisation_gap"]["per_variant"]) == {"bn", "identity"}


def test_a2_uses_the_mean_over_the_layers_every_run_has_and_skips_runs_without_test_accuracy():
    res = _results([("bn", 0, {"sparsity": {"l0": {"channel_sparsity": 0.2}, "l1": {"channel_sparsity": 0.4}}},
                     1.0, 0.9),
                    ("identity", 0, {"sparsity": {"l0": {"channel_sparsity": 0.6}}}, 1.0, 0.8),
                    ("identity", 1, {"sparsity": {"l0": {"channel_sparsity": 0.9}}}, 1.0, None)])
    rows = run_sparsity(res)
    assert [(row["variant"], row["sparsity"]) for row in rows] == [("bn", 0.2), ("identity", 0.6)]  # l0 only
    assert rows[0]["generalisation_gap"] == pytest.approx(0.1)
    assert generalisation_verdict(res).holds is None  # two runs: no correlation to speak of
    assert generalisation_verdict(_paired("hdbscan", {"ari": [0.1]})).holds is None


CLUSTERING = ("ari", "nmi", "purity", "noise_fraction")


def _clustering(**differences):
    """bn - identity per metric (every layer the same unless a list), three layers."""
    return _paired("hdbscan", {m: d if isinstance(d, list) else [d] * 3 for m, d in differences.items()})


def test_b_holds_when_the_metrics_agree_bn_clusters_better():
    verdict = clustering_verdict(_clustering(ari=0.1, nmi=0.1, purity=0.1, noise_fraction=-0.1, dbcv=0.1))
    assert verdict.key == "b" and verdict.holds is True
    metrics = verdict.numbers["metrics"]
    assert list(metrics) == [*CLUSTERING, "dbcv"] and all(m["outcome"] == "bn better" for m in metrics.values())
    noise = metrics["noise_fraction"]  # lower is better: a negative difference is bn's advantage
    assert not noise["higher_is_better"] and noise["layers"]["l0"]["estimate"] == pytest.approx(-0.1)
    assert noise["layers"]["l0"]["reading"] == "bn better"
    assert "ari bn better (3 of 3 layers)" in verdict.evidence and "disagree" not in verdict.evidence


def test_b_does_not_hold_when_the_metrics_agree_bn_is_no_better():
    # equal within the margin (0 ± 0.012 lies below 0.02), and noisier for bn
    verdict = clustering_verdict(_clustering(ari=0.0, nmi=0.0, purity=-0.1, noise_fraction=0.1))
    assert verdict.holds is False
    assert {m["outcome"] for m in verdict.numbers["metrics"].values()} == {"bn not better"}


def test_b_is_undecided_and_says_so_when_the_metrics_disagree():
    verdict = clustering_verdict(_clustering(ari=0.1, nmi=0.1, purity=0.1, noise_fraction=0.1))
    assert verdict.holds is None
    assert "the metrics disagree: bn better on ari, nmi, purity, not better on noise_fraction" in verdict.evidence


def test_b_is_undecided_when_too_few_metrics_decide():
    mixed = [0.1, 0.0]  # one layer better, one not: no majority
    verdict = clustering_verdict(_clustering(ari=[0.1, 0.1], nmi=mixed, purity=mixed, noise_fraction=[-0.1, 0.0]))
    assert verdict.holds is None and "only 1 of 4 metrics decide" in verdict.evidence
    assert "nmi undecided (better 1, not better 1)" in verdict.evidence
    one_seed = clustering_verdict(_paired("hdbscan", {"ari": [0.3]}, seeds=1))
    assert one_seed.holds is None and one_seed.numbers["metrics"]["ari"]["layers"]["l0"]["reading"] == "unclear"
    assert clustering_verdict(_paired("sparsity", {"channel_sparsity": [0.1]})).holds is None


def test_verdicts_are_plain_data_and_print_within_80_columns():
    verdicts = [sparsity_change_verdict(_paired("sparsity", {"channel_sparsity": [0.0, -0.2, 0.1]})),
                generalisation_verdict(_gap_study(4, _alternating, _orthogonal_gap)),
                clustering_verdict(_clustering(ari=0.1, nmi=0.1, purity=0.1, noise_fraction=0.1))]
    for verdict in verdicts:
        saved = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
        assert saved["key"] == verdict.key and saved["numbers"] == verdict.numbers and saved["rule"]
        lines = verdict_lines(verdict)
        assert all(len(line) <= 80 for line in lines)
        assert lines[0].startswith(f"  ({verdict.key}) {verdict.finding}: ")
        assert " ".join(line.strip() for line in lines[1:]) == f"rule: {verdict.rule} evidence: {verdict.evidence}"


def test_a2_leaves_out_a_run_without_sparsity_numbers_instead_of_giving_up():
    """A diverged run is not probed but keeps its test accuracy: it must not take every layer out of a2."""
    def tracking(variant, seed, sparsity):
        return 0.05 + 0.5 * (sparsity - 0.5) + 0.001 * (seed % 3)

    res = _gap_study(4, lambda s: 0.01 * s, tracking)
    res.runs.append(RunResult("identity", 4, 0.1, 0.1, None, diverged_at_epoch=1))
    verdict = generalisation_verdict(res)
    assert verdict.holds is False and len(verdict.numbers["runs"]) == 8
