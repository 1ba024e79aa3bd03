"""Probing each seed on disjoint sample sets of its own: the sets, the means over them, and the split of
the spread into seeds and samples (a one-way random-effects analysis checked by hand)."""

import math

import pytest
import torch
from _cli import run_cli

from bnprobe.data import Dataset, Split, load_dataset
from bnprobe.errors import BnprobeError
from bnprobe.probes import mean_over_sets
from bnprobe.probes.runner import ProbeFailure, ProbeOutcome
from bnprobe.report import Results, RunResult, spread_sources
from bnprobe.reproduce._verdict import layer_estimates
from bnprobe.study import StudyConfig, run_study
from bnprobe.study._run import probe_subset, seed_sample_sets
from bnprobe.train import TrainConfig


def _results(values: dict[str, dict[int, list[float]]]) -> Results:
    """Runs with one layer whose ``sparsity``/``m`` numbers per set are ``values[variant][seed]``."""
    runs = [RunResult(variant=variant, seed=seed, train_accuracy=0.9, test_accuracy=0.8, final_loss=0.1,
                      probes={"sparsity": {"l": {"m": sum(sets) / len(sets)}}},
                      sample_sets=[{"sparsity": {"l": {"m": v}}} for v in sets])
            for variant, seeds in values.items() for seed, sets in seeds.items()]
    return Results(model="m", dataset="d", config={}, runs=runs, layers=["l"])


def test_the_spread_splits_into_seeds_and_samples_as_the_hand_anova_does():
    # seed means 2, 3, 7 (grand mean 4), each set 1 from its seed's mean:
    # MS_within = 6 / 3 = 2, MS_between = 2 * (4 + 1 + 9) / 2 = 14, seed_var = (14 - 2) / 2 = 6,
    # a run's number (mean of 2 sets) has variance 6 + 2 / 2 = 7, 1/7 of it from the samples.
    results = _results({"identity": {0: [1.0, 3.0], 1: [2.0, 4.0], 2: [6.0, 8.0]}})
    sources = spread_sources(results, "sparsity", "l", "m", "identity", reference=None)
    assert (sources.seeds, sources.sets) == (3, 2)
    assert sources.sample_sd == pytest.approx(math.sqrt(2)) and sources.seed_sd == pytest.approx(math.sqrt(6))
    assert sources.sample_share == pytest.approx(1 / 7)


def test_the_paired_spread_reads_the_differences_set_by_set():
    bn = {0: [5.0, 5.0], 1: [6.0, 6.0], 2: [7.0, 7.0]}
    # bn - identity per set: (1, 3), (2, 4), (6, 8): the same numbers as above
    identity = {0: [4.0, 2.0], 1: [4.0, 2.0], 2: [1.0, -1.0]}
    sources = spread_sources(_results({"bn": bn, "identity": identity}), "sparsity", "l", "m", "identity")
    assert sources.sample_sd == pytest.approx(math.sqrt(2)) and sources.seed_sd == pytest.approx(math.sqrt(6))
    # bn's own sets agree within each seed: all its spread is the seeds'
    own = spread_sources(_results({"bn": bn}), "sparsity", "l", "m", "bn")
    assert own.sample_sd == 0 and own.sample_share == 0 and own.seed_sd == pytest.approx(1.0)
    interval = layer_estimates(_results({"bn": bn, "identity": identity}), "sparsity", "m", "identity")["l"][1]
    assert interval["spread"]["sample_sd"] == pytest.approx(math.sqrt(2))


def test_no_split_without_two_seeds_of_two_sets_and_seed_spread_never_negative():
    assert spread_sources(_results({"bn": {0: [1.0, 2.0]}}), "sparsity", "l", "m", "bn") is None
    assert spread_sources(_results({"bn": {0: [1.0], 1: [2.0]}}), "sparsity", "l", "m", "bn") is None
    noisy = spread_sources(_results({"bn": {0: [0.0, 4.0], 1: [4.0, 0.0]}}), "sparsity", "l", "m", "bn")
    assert noisy.seed_sd == 0.0 and noisy.sample_share == 1.0  # MS_between < MS_within: truncated at 0


def test_a_runs_numbers_are_the_means_over_its_sets_and_none_unless_every_set_has_one():
    a = ProbeOutcome(values={"p": {"l1": {"x": 1.0, "y": 2.0}, "l2": {"x": 1.0}}},
                     failures=[ProbeFailure("p", "l3", "boom")], notes={"p": {"l1": {"n": "first"}}})
    b = ProbeOutcome(values={"p": {"l1": {"x": 2.0, "y": None}}},
                     failures=[ProbeFailure("p", "l3", "boom again"), ProbeFailure("p", "l2", "bad")])
    merged = mean_over_sets([a, b])
    assert merged.values == {"p": {"l1": {"x": 1.5, "y": None}, "l2": {"x": None}}}
    assert [(f.probe, f.layer, f.error) for f in merged.failures] == [("p", "l3", "boom"), ("p", "l2", "bad")]
    assert merged.notes == a.notes and merged.sample_sets == [a.values, b.values]
    assert mean_over_sets([a]) is a


def test_each_seed_has_disjoint_sets_of_its_own_and_seed_0_set_0_is_the_usual_sample():
    split = Split(torch.arange(100).float()[:, None], torch.arange(100) % 2)
    ids = {(seed, k): {int(v) for v in s.x[:, 0]} for seed in (0, 1, 2)
           for k, s in enumerate(seed_sample_sets(split, 10, 3, seed))}
    assert all(len(v) == 10 for v in ids.values())
    assert len(set().union(*ids.values())) == 90  # no sample in two sets, of one seed or two
    assert ids[(0, 0)] == {int(v) for v in probe_subset(split, 10).x[:, 0]}
    assert ids == {(seed, k): {int(v) for v in s.x[:, 0]} for seed in (0, 1, 2)
                   for k, s in enumerate(seed_sample_sets(split, 10, 3, seed))}  # fixed: the same every time


def _blobs() -> Dataset:
    """The tests' tiny-study data (tests/conftest.py): 4 classes, 64 images to train and 32 to test."""
    return load_dataset("tiny-study")


def _config(**changes) -> StudyConfig:
    return StudyConfig(**{"model": "cnn4", "variants": ["bn", "identity"], "seeds": 2, "samples": 12,
                          "sample_sets": 2, "probes": ["sparsity"], "device": "cpu", "probe_workers": 0,
                          "train": TrainConfig(epochs=1, batch_size=32), **changes})


def test_a_study_on_two_sample_sets_keeps_each_and_reports_the_split(tmp_path):
    results = run_study(_config(), out=tmp_path / "study", dataset=_blobs())
    assert Results.load(tmp_path / "study").config["sample_sets"] == 2
    for run in results.runs:
        assert len(run.sample_sets) == 2
        for layer, numbers in run.probes["sparsity"].items():
            sets = [s["sparsity"][layer]["channel_sparsity"] for s in run.sample_sets]
            assert numbers["channel_sparsity"] == pytest.approx(sum(sets) / 2)
        assert run.sample_sets[0] != run.sample_sets[1]  # two different sets of samples
    layer = results.layers[0]
    assert spread_sources(results, "sparsity", layer, "channel_sparsity", "identity") is not None
    one = run_study(_config(sample_sets=1), dataset=_blobs())
    assert all(run.sample_sets == [] for run in one.runs)


def test_too_few_training_samples_for_the_sets_is_one_line():
    with pytest.raises(BnprobeError, match=r"sample_sets=3 disjoint sets of 12 samples .* need 72 training samples"):
        run_study(_config(sample_sets=3), dataset=_blobs())
    with pytest.raises(BnprobeError, match="sample_sets must be a whole number of at least 1"):
        _config(sample_sets=0)


def test_the_cli_probes_sample_sets_and_prints_where_the_spread_comes_from(tmp_path):
    result = run_cli("run", "cnn4", "--variants", "bn,identity", "--dataset", "tiny-study", "--epochs", "1",
                     "--seeds", "2", "--samples", "8", "--sample-sets", "2", "--batch-size", "32", "--device",
                     "cpu", "--probes", "sparsity", "--probe-workers", "0", "--out", tmp_path / "study")
    assert result.exit_code == 0, result.output
    output = result.output
    words = " ".join(output.split())  # the console wraps at 80 columns
    assert "8 probed samples in each of 2 sets per seed" in words
    assert "sparsity channel_sparsity: sd from seeds and from samples (2 sample sets per seed" in words
    line = next(line for line in output.splitlines() if "features.5" in line and "bn − identity" in line)
    assert "seeds ±" in line and "samples ±" in line and line.rstrip().endswith("%)")
