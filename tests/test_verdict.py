import pytest

from bnprobe.results import Results, RunResult
from bnprobe.verdict import clustering_verdict, layer_differences, sparsity_verdict


def _results(sparsity, ari):
    """sparsity/ari: {(variant, seed): [value per layer]} for layers l0, l1, l2."""
    runs = []
    for (variant, seed), values in sparsity.items():
        probes = {"sparsity": {f"l{i}": {"channel_sparsity": v} for i, v in enumerate(values)},
                  "hdbscan": {f"l{i}": {"ari": a} for i, a in enumerate(ari[(variant, seed)])}}
        runs.append(RunResult(variant, seed, 1.0, 1.0, 0.1, probes=probes))
    return Results("cnn4", "mnist", {}, runs, layers=["l0", "l1", "l2"])


def test_differences_are_seed_paired_means():
    res = _results({("bn", 0): [0.5, 0.6, 0.7], ("identity", 0): [0.4, 0.6, 0.9],
                    ("bn", 1): [0.5, 0.5, 0.5], ("identity", 1): [0.6, 0.5, 0.5]},
                   {k: [0, 0, 0] for k in [("bn", 0), ("identity", 0), ("bn", 1), ("identity", 1)]})
    diffs = layer_differences(res, "sparsity", "channel_sparsity", "identity")
    assert diffs == pytest.approx({"l0": 0.0, "l1": 0.0, "l2": -0.1})


def test_verdicts_follow_their_rules():
    keys = [("bn", 0), ("identity", 0)]
    res = _results(dict(zip(keys, [[0.5, 0.5, 0.5], [0.52, 0.47, 0.5]], strict=True)),
                   dict(zip(keys, [[0.6, 0.5, 0.2], [0.4, 0.4, 0.3]], strict=True)))
    a = sparsity_verdict(res)
    assert a.holds is True and "0.017" in a.evidence  # (0.02 + 0.03 + 0) / 3
    b = clustering_verdict(res)
    assert b.holds is True and "2 of 3 layers" in b.evidence
    worse = _results(dict(zip(keys, [[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]], strict=True)),
                     dict(zip(keys, [[0.1, 0.1, 0.9], [0.5, 0.5, 0.1]], strict=True)))
    assert sparsity_verdict(worse).holds is False
    assert clustering_verdict(worse).holds is False  # ahead in 1 of 3 layers


def test_missing_numbers_leave_the_verdict_open():
    res = Results("cnn4", "mnist", {}, [RunResult("bn", 0, 1.0, 1.0, 0.1)], layers=["l0"])
    assert sparsity_verdict(res).holds is None and clustering_verdict(res).holds is None
