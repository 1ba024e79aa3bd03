"""Shards without Ray: ``--seeds A-B`` and ``--shard K/N`` run part of a study, and ``bnprobe merge``
joins the parts into the study one run would have written, refusing parts that do not fit."""

import json

import pytest
from click.testing import CliRunner

import bnprobe
from bnprobe._seeds import parse_seeds, shard_seeds
from bnprobe.cli import cli
from bnprobe.errors import BnprobeError
from bnprobe.study import StudyConfig, run_study
from bnprobe.study._shards import merge_studies
from bnprobe.train import TrainConfig


def test_seeds_are_a_count_or_a_range_and_a_shard_takes_every_nth():
    assert parse_seeds(3) == (0, 3) and parse_seeds("3") == (0, 3) and parse_seeds("4-7") == (4, 4)
    config = StudyConfig(model="cnn4", seeds="4-7", shard="2/3", probes=["sparsity"])
    assert (config.first_seed, config.seeds, config.seed_range, config.run_seeds) == (4, 4, [4, 5, 6, 7], [5])
    assert shard_seeds([0, 1, 2, 3, 4], "1/2") == [0, 2, 4]
    assert StudyConfig.from_dict(config.to_dict()).run_seeds == [5]
    for bad, message in (("7-4", "ends before it starts"), ("a", r"give a count \(4: seeds 0-3\) or a range"),
                         (0, "at least 1")):
        with pytest.raises(BnprobeError, match=message):
            parse_seeds(bad)
    for bad, message in (("3/2", r"write K/N with 1 <= K <= N"), ("1-2", "write K/N"),
                         ("4/4", "shard 4/4 has no seeds: the study has 3 .0-2.; use at most 3 shards")):
        with pytest.raises(BnprobeError, match=message):
            StudyConfig(model="cnn4", seeds=3, shard=bad, probes=["sparsity"])


def _config(**changes) -> StudyConfig:
    return StudyConfig(**{"model": "cnn4", "dataset": "digits", "variants": ("bn", "identity"), "seeds": 3,
                          "probes": ["sparsity", "cka"], "samples": 100, "device": "cpu",
                          "train": TrainConfig(epochs=1), **changes})


def _numbers(results: bnprobe.Results) -> list[tuple]:
    return [(run.variant, run.seed, run.test_accuracy, run.history, run.probes) for run in results.runs]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    whole = run_study(_config(), out=root / "whole")
    for k in (1, 2):
        run_study(_config(shard=f"{k}/2"), out=root / f"shard{k}")
    return root, whole


def test_merged_shards_are_the_study_one_run_writes(shards, tmp_path):
    root, whole = shards
    part = bnprobe.Results.load(root / "shard1")
    assert part.seeds == [0, 2] and part.config["shard"] == "1/2"
    merged = merge_studies(tmp_path / "merged", [root / "shard2", root / "shard1"])
    assert _numbers(merged) == _numbers(whole)  # in the study's order, whatever the shards' order
    saved = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert saved["config"]["shard"] is None and (saved["config"]["first_seed"], saved["config"]["seeds"]) == (0, 3)
    assert saved["layers"] == whole.layers
    for name in ("results.csv", "history.csv", "plots/cka.png", "checkpoints/identity-seed2.pt"):
        assert (tmp_path / "merged" / name).is_file(), name
    again = bnprobe.load_run(tmp_path / "merged", "identity", seed=2)  # a merged run opens as any other
    assert sum(p.numel() for p in again.parameters()) > 0


def test_a_seed_range_is_a_shard_too(shards, tmp_path):
    root, whole = shards
    run_study(_config(seeds="1-2"), out=tmp_path / "late")
    run_study(_config(seeds=1), out=tmp_path / "early")
    merged = merge_studies(tmp_path / "merged", [tmp_path / "early", tmp_path / "late"])
    assert _numbers(merged) == _numbers(whole)


def test_merge_refuses_missing_duplicated_and_foreign_parts(shards, tmp_path):
    root, _ = shards
    with pytest.raises(BnprobeError, match=r"no shard holds bn seed 1, identity seed 1 \(seeds 0-2\); run the shards"):
        merge_studies(tmp_path / "a", [root / "shard1"])
    with pytest.raises(BnprobeError, match="bn seed 0 is in both .*whole and .*shard1; merge each run once"):
        merge_studies(tmp_path / "b", [root / "whole", root / "shard1"])
    run_study(_config(shard="2/2", samples=50), out=tmp_path / "other")
    with pytest.raises(BnprobeError, match=r"other is not a shard of the study in .*shard1: its config differs "
                                           r"\(samples is 100 in .*shard1 and 50\)"):
        merge_studies(tmp_path / "c", [root / "shard1", tmp_path / "other"])
    with pytest.raises(BnprobeError, match="nothing holds no study|holds no study .no results.json."):
        merge_studies(tmp_path / "d", [root / "shard1", tmp_path / "nothing"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "results.json").exists()


def test_bnprobe_merge_reports_the_study_and_fails_in_one_line(shards, tmp_path):
    root, whole = shards
    runner = CliRunner()
    result = runner.invoke(cli, ["merge", str(tmp_path / "m"), str(root / "shard1"), str(root / "shard2")],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "merged 2 shards, 6 runs" in result.output and "Δ identity" in result.output
    again = runner.invoke(cli, ["merge", str(tmp_path / "m"), str(root / "shard1"), str(root / "shard2")])
    assert again.exit_code == 2 and "Traceback" not in again.output and len(again.output.strip().splitlines()) == 1
    assert "already holds a study" in again.output or "--overwrite" in again.output
    missing = runner.invoke(cli, ["merge", str(tmp_path / "n"), str(root / "shard1")])
    assert missing.exit_code == 2 and missing.output.startswith("error: no shard holds bn seed 1")


def test_bnprobe_run_takes_a_seed_range_and_a_shard(tmp_path):
    result = CliRunner().invoke(cli, ["run", "cnn4", "--variants", "bn,identity", "--seeds", "3-5", "--shard", "2/2",
                                      "--epochs", "1", "--samples", "50", "--probes", "sparsity", "--quiet",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert bnprobe.Results.load(tmp_path / "out").seeds == [4]
    bad = CliRunner().invoke(cli, ["run", "cnn4", "--seeds", "2", "--shard", "3/3", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and bad.output == "error: shard 3/3 has no seeds: the study has 2 (0-1); use at most " \
                                                "2 shards\n"


def test_an_executor_that_does_not_exist_is_one_line():
    result = CliRunner().invoke(cli, ["run", "cnn4", "--executor", "slurm", "--out", "unused"])
    assert result.exit_code == 2
    assert result.output == ("error: executor 'slurm': use local, ray (a local Ray instance) or ray:ADDRESS "
                             "(ray:auto for the cluster `ray start` runs)\n")
    for option, value, message in (("--gpus-per-task", "-1", "gpus_per_task must be 0 or more"),
                                   ("--cpus-per-task", "0", "cpus_per_task must be more than 0"),
                                   ("--max-retries", "-2", "max_retries must be a whole number, 0 or more")):
        bad = CliRunner().invoke(cli, ["run", "cnn4", option, value, "--out", "unused"])
        assert bad.exit_code == 2 and bad.output.startswith(f"error: {message}"), bad.output


def test_a_study_file_sets_the_seed_range_shard_and_executor(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('model = "cnn4"\nvariants = ["bn", "identity"]\nseeds = "3-4"\nshard = "2/2"\nexecutor = "local"\n'
                     'max-retries = 1\nepochs = 1\nsamples = 50\nprobes = ["sparsity"]\n')
    result = CliRunner().invoke(cli, ["run", "--config", str(study), "--quiet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    saved = bnprobe.Results.load(tmp_path / "out")
    assert saved.seeds == [4] and saved.config["executor"] == "local" and saved.config["max_retries"] == 1
    assert (saved.config["first_seed"], saved.config["seeds"], saved.config["shard"]) == (3, 2, "2/2")


def test_merge_overwrite_replaces_the_study_in_out_and_a_range_excludes_first_seed(shards, tmp_path):
    root, whole = shards
    run_study(_config(seeds=1, variants=("bn",), probes=["sparsity"]), out=tmp_path / "m")
    (tmp_path / "m" / "mine.txt").write_text("kept")
    merged = merge_studies(tmp_path / "m", [root / "shard1", root / "shard2"], overwrite=True)
    assert _numbers(merged) == _numbers(whole)
    assert sorted(p.name for p in (tmp_path / "m" / "checkpoints").iterdir()) == sorted(
        f"{v}-seed{s}.pt" for v in ("bn", "identity") for s in range(3))
    assert (tmp_path / "m" / "mine.txt").read_text() == "kept"  # not the study's: left alone
    with pytest.raises(BnprobeError, match="seeds '4-7' is a range and first_seed is 2; give one of them"):
        parse_seeds("4-7", first_seed=2)
    with pytest.raises(BnprobeError, match="executor 'local:': use local, ray"):
        _config(executor="local:")
