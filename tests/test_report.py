"""The report, its files and the compare command, on a study built by hand with known numbers.

Two variants (bn, identity) x three seeds, two layers.  Every expected number below is worked out
here from the raw values, with the Student t quantiles taken from a printed table.
"""

import csv
import io
import json
import math
import os
import re
import stat
import statistics

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from bnprobe.cli import cli
from bnprobe.cli._progress import RichListener
from bnprobe.report import render, summary_json, write_outputs
from bnprobe.report._plots import figure_pixels
from bnprobe.report._results import CSV_COLUMNS, RUN_METRICS, Results, RunResult, write_atomic
from bnprobe.report._stats import paired_difference, t_quantile, welch_difference
from bnprobe.report._terminal import sparkline

T_975 = {2: 4.302652729749464, 4: 2.776445105197793}
"""Two-sided 95% Student t critical values by degrees of freedom, from a printed table."""

LAYERS = ["features.2", "features.5"]
SPARSITY = {  # (variant, layer) -> channel sparsity of seeds 0, 1, 2
    ("bn", "features.2"): [0.10, 0.20, 0.30], ("identity", "features.2"): [0.40, 0.45, 0.65],
    ("bn", "features.5"): [0.50, 0.60, 0.70], ("identity", "features.5"): [0.55, 0.50, 0.80],
}
ARI = {"bn": [0.30, 0.35, 0.40], "identity": [0.10, 0.20, 0.15]}
TEST_ACC = {"bn": [0.95, 0.96, 0.94], "identity": [0.90, 0.93, 0.89]}


def _study(seeds: int = 3, shift: float = 0.0) -> Results:
    """The hand-made study; ``shift`` is added to every channel sparsity (a second study for compare)."""
    runs = []
    for seed in range(seeds):
        for variant in ("bn", "identity"):
            probes = {"sparsity": {layer: {"channel_sparsity": SPARSITY[variant, layer][seed] + shift,
                                           "hoyer": 0.5} for layer in LAYERS},
                      "hdbscan": {layer: {"ari": ARI[variant][seed], "nmi": 0.4, "n_clusters": 3.0 + seed,
                                          "noise_fraction": None} for layer in LAYERS}}
            runs.append(RunResult(variant, seed, 1.0, TEST_ACC[variant][seed], 0.05, test_loss=0.2, epochs_run=5,
                                  swap={"n_swapped": 0 if variant == "bn" else 4}, probes=probes))
    return Results("cnn4", "digits", {"samples_probed": 120}, runs, layers=LAYERS)


def _paired_by_hand(values: list[float], reference: list[float]) -> tuple[float, float, float]:
    """Mean of the per-seed differences and its 95% Student t interval, from the table above."""
    diffs = [v - r for v, r in zip(values, reference, strict=True)]
    mean, sd, n = statistics.fmean(diffs), statistics.stdev(diffs), len(diffs)
    half = T_975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _rendered(results: Results, **kwargs) -> str:
    console = Console(record=True, width=120)
    render(results, console, **kwargs)
    return console.export_text()


def test_t_quantile_matches_the_printed_table():
    for df, value in T_975.items():
        assert t_quantile(df) == pytest.approx(value, abs=1e-9)


def test_paired_difference_is_a_t_interval_on_the_per_seed_differences():
    bn, ident = SPARSITY["bn", "features.2"], SPARSITY["identity", "features.2"]
    mean, low, high = _paired_by_hand(ident, bn)  # diffs 0.30, 0.25, 0.35: mean 0.30, sd 0.05
    d = paired_difference(dict(enumerate(ident)), dict(enumerate(bn)))
    assert (d.estimate, d.low, d.high, d.n) == pytest.approx((0.30, 0.30 - 4.302653 * 0.05 / math.sqrt(3),
                                                              0.30 + 4.302653 * 0.05 / math.sqrt(3), 3))
    assert (d.estimate, d.low, d.high) == pytest.approx((mean, low, high)) and d.excludes_zero
    single = paired_difference({0: 0.4}, {0: 0.1, 1: 0.2})  # seed 1 has no partner: one pair
    assert single.estimate == pytest.approx(0.3) and single.low is None and not single.excludes_zero
    assert paired_difference({0: None}, {0: 0.1}) is None


def test_welch_difference_with_equal_variances_has_2n_minus_2_df():
    a = [0.1, 0.2, 0.3]
    d = welch_difference([x + 0.1 for x in a], a)
    half = T_975[4] * math.sqrt(2 * 0.1**2 / 3)
    assert (d.estimate, d.low, d.high) == pytest.approx((0.1, 0.1 - half, 0.1 + half))
    assert welch_difference([0.5, 0.5], [0.2, 0.2]).low == pytest.approx(0.3)  # no noise: a point interval


def test_report_shows_mean_std_difference_interval_and_mark():
    text = _rendered(_study())
    assert "sparsity — channel_sparsity (mean ± std over 3 seeds)" in text
    assert "0.200 ± 0.100" in text and "0.500 ± 0.132" in text  # bn and identity at features.2
    for layer, marked in (("features.2", True), ("features.5", False)):
        mean, low, high = _paired_by_hand(SPARSITY["identity", layer], SPARSITY["bn", layer])
        cell = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        line = next(line for line in text.splitlines() if line.startswith(layer) and cell in line)
        assert line.rstrip().endswith(cell + (" *" if marked else ""))
    assert "paired by seed; Student t interval" in text and "* the interval excludes 0" in text
    mean, low, high = _paired_by_hand(ARI["identity"], ARI["bn"])
    assert "hdbscan — ari" in text and f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] *" in text
    mean, low, high = _paired_by_hand(TEST_ACC["identity"], TEST_ACC["bn"])
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "identity (4 norm layers swapped)")
    assert [re.split(r"\s{2,}", line.strip())[-1] for line in lines[start + 1:start + 6]] == [
        "1.000 ± 0.000", "0.050 ± 0.000", "0.907 ± 0.021", f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] *", "0.200 ± 0.000"]
    assert lines[start + 4].strip().startswith("test acc (eval mode) − bn")


def test_report_depth_profile_is_a_sparkline_on_one_scale():
    assert sparkline([0.0, 0.5, 1.0, None], 0.0, 1.0) == "▁▅█·"
    assert sparkline([2.0, 2.0], 2.0, 2.0) == "▅▅"
    text = _rendered(_study())
    # channel sparsity means: bn 0.2 -> 0.6, identity 0.5 -> 0.6167; scale 0.2 ... 0.6167
    assert "depth profile, features.2 → features.5 (▁ 0.200 … █ 0.617)" in text
    sparsity_part = text.split("hdbscan — ari")[0]
    profile = {line.split()[0]: line.split()[1] for line in sparsity_part.splitlines()
               if line.split()[:1] in (["bn"], ["identity"]) and len(line.split()) == 2}
    assert profile == {"bn": "▁█", "identity": "▆█"}  # round(0.3 / 0.4167 * 7) = 5


def test_one_seed_says_there_is_no_interval():
    text = _rendered(_study(seeds=1))
    assert "channel_sparsity (1 seed)" in text and "1 seed: no interval" in text
    first = next(line for line in text.splitlines() if line.startswith("features.2"))
    assert first.split() == ["features.2", "0.100", "0.400", "+0.300"]  # no std, no interval


def _interrupted(seeds: int, variants: list[str], **config) -> Results:
    """The one-seed study as an interrupted study saves it: a config asking for ``variants`` × ``seeds``."""
    from bnprobe.study import StudyConfig

    results = _study(seeds=1)
    asked = StudyConfig(model="cnn4", variants=variants, seeds=seeds, probes=["sparsity"], **config).to_dict()
    results.config = {**asked, **results.config}
    return results


def test_an_interrupted_study_says_which_runs_are_missing_and_that_resume_completes_them(tmp_path):
    results = _interrupted(3, ["bn", "identity", "groupnorm"])
    assert results.missing_runs() == {"bn": [1, 2], "identity": [1, 2], "groupnorm": [0, 1, 2]}
    text = " ".join(_rendered(results).split())
    assert ("incomplete study: 7 of 9 runs missing (bn seeds 1-2; identity seeds 1-2; groupnorm seeds 0-2); "
            "run it again with resume=True to complete them") in text
    assert "1 seed: no interval (complete the study with resume=True)" in text
    results.save(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "run it again with --resume to complete them" in " ".join(result.output.split())


def test_only_an_incomplete_study_gets_the_missing_runs_line():
    whole = _study(seeds=3)
    whole.config = {**_interrupted(3, ["bn", "identity"]).config, "samples_probed": 120}
    assert whole.missing_runs() == {} and "incomplete study" not in _rendered(whole)
    assert "incomplete study" not in _rendered(_study(seeds=1))  # no seeds in its config: nothing to say
    one_variant = _interrupted(1, ["bn", "identity"])
    one_variant.runs = [run for run in one_variant.runs if run.variant == "bn"]
    text = " ".join(_rendered(one_variant).split())
    assert "(identity seed 0)" in text and "nothing to compare" not in text  # identity was asked for, not left out
    shard = _interrupted(2, ["bn", "identity"], shard="1/2")  # seed 0 of seeds 0-1: all of the shard's runs
    assert shard.missing_runs() == {} and "incomplete study" not in _rendered(shard)


def test_metrics_option_picks_metrics_and_names_the_ones_on_offer():
    text = _rendered(_study(), metrics=["n_clusters", "hoyer"])
    assert "hdbscan — n_clusters" in text and "sparsity — hoyer" in text and "channel_sparsity" not in text
    from bnprobe.errors import BnprobeError
    with pytest.raises(BnprobeError, match="no metric named foo.*metrics: ari, channel_sparsity"):
        _rendered(_study(), metrics=["foo"])


def test_plots_are_pngs_of_the_expected_size_with_their_numbers_beside(tmp_path):
    written = write_outputs(_study(), tmp_path)
    assert {p.name for p in written} == {"results.csv", "history.csv", "accuracy.png", "accuracy.csv", "sparsity.png",
                                         "sparsity.csv", "hdbscan.png", "hdbscan.csv"}
    assert figure_pixels(1) == (500, 340) and figure_pixels(4) == (1000, 680)  # 5 x 3.4 in a panel at 100 dpi
    for name, (width, height) in (("accuracy", (500, 340)), ("sparsity", (500, 340)), ("hdbscan", (1000, 680))):
        image = mpimg.imread(tmp_path / "plots" / f"{name}.png")
        assert image.shape[:2] == (height, width)
        assert np.asarray(image[..., :3]).std() > 0.05  # something is drawn, not a blank canvas
    with open(tmp_path / "plots" / "sparsity.csv", newline="") as handle:
        rows = {(r["layer"], r["variant"]): r for r in csv.DictReader(handle)}
    assert set(rows) == {(layer, v) for layer in LAYERS for v in ("bn", "identity")}
    row = rows["features.2", "identity"]
    mean, low, high = _paired_by_hand(SPARSITY["identity", "features.2"], SPARSITY["bn", "features.2"])
    assert float(row["mean"]) == pytest.approx(0.5) and float(row["std"]) == pytest.approx(statistics.stdev(
        SPARSITY["identity", "features.2"]))
    assert (float(row["diff"]), float(row["diff_low"]), float(row["diff_high"])) == pytest.approx((mean, low, high))
    assert row["diff_excludes_zero"] == "True" and rows["features.2", "bn"]["diff"] == ""
    with open(tmp_path / "plots" / "hdbscan.csv", newline="") as handle:
        assert {r["metric"] for r in csv.DictReader(handle)} == {"ari", "nmi", "n_clusters", "noise_fraction"}
    assert not list(tmp_path.rglob(".*.tmp"))


def test_csv_round_trips_to_the_numbers_of_the_json(tmp_path):
    results = _study()
    results.save(tmp_path)
    results.save_csv(tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    expected = {}
    for run in data["runs"]:
        for metric in RUN_METRICS:
            expected[run["variant"], run["seed"], "run", "model", metric] = run[metric]
        for probe, layers in run["probes"].items():
            for layer, metrics in layers.items():
                for metric, value in metrics.items():
                    expected[run["variant"], run["seed"], probe, layer, metric] = value
    with open(tmp_path / "results.csv", newline="") as handle:
        reader = csv.reader(handle)
        assert tuple(next(reader)) == CSV_COLUMNS
        got = {(v, int(seed), p, layer, m): (float(value) if value else None)
               for v, seed, p, layer, m, value in reader}
    assert got == expected  # exact: floats are written with repr, nulls as empty fields
    assert got["identity", 2, "sparsity", "features.5", "channel_sparsity"] == 0.80
    assert got["bn", 0, "hdbscan", "features.2", "noise_fraction"] is None


def test_atomic_writes_take_text_or_bytes_with_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_atomic(tmp_path / "a.txt", "± 1\n")
    write_atomic(tmp_path / "b.png", b"\x89PNG")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "± 1\n"
    assert (tmp_path / "b.png").read_bytes() == b"\x89PNG"
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png"]


def test_summary_json_is_plain_data_with_the_same_numbers():
    summary = json.loads(json.dumps(summary_json(_study()), allow_nan=False))
    cell = summary["probes"]["sparsity"]["features.2"]["channel_sparsity"]["identity"]
    mean, low, high = _paired_by_hand(SPARSITY["identity", "features.2"], SPARSITY["bn", "features.2"])
    assert cell["mean"] == pytest.approx(0.5) and cell["n"] == 3
    assert cell["difference"] == pytest.approx({"estimate": mean, "low": low, "high": high, "n": 3,
                                                "excludes_zero": True})
    assert summary["probes"]["sparsity"]["features.2"]["channel_sparsity"]["bn"]["difference"] is None
    assert summary["probes"]["run"]["model"]["test_accuracy"]["bn"]["mean"] == pytest.approx(0.95)
    assert summary["reference"] == "bn" and summary["seeds"] == [0, 1, 2]


def test_cli_report_renders_and_writes_the_files_again(tmp_path):
    _study().save(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0.200 ± 0.100" in result.output and "features.5" in result.output
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "plots" / "sparsity.png").is_file()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "results.json"), "--json", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["probes"]["hdbscan"]["features.2"]["ari"]["bn"]["mean"] == pytest.approx(0.35)


def test_cli_compare_puts_two_studies_side_by_side(tmp_path):
    _study().save(tmp_path / "a")
    _study(shift=0.1).save(tmp_path / "b")
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")], terminal_width=120)
    assert result.exit_code == 0, result.output
    # bn at features.2: A 0.2 ± 0.1, B 0.3 ± 0.1; Welch df = 4 with equal variances
    half = T_975[4] * math.sqrt(2 * 0.1**2 / 3)
    line = next(line for line in result.output.splitlines() if line.startswith("features.2"))
    assert line.split()[:8] == ["features.2", "bn", "0.200", "±", "0.100", "0.300", "±", "0.100"]
    assert line.rstrip().endswith(f"+0.100 [{0.1 - half:+.3f}, {0.1 + half:+.3f}]")
    assert "hdbscan — ari" in result.output and "test acc (eval mode) (mean ± std over seeds)" in result.output


def test_compare_with_a_one_seed_study_says_why_there_is_no_interval(tmp_path):
    _study().save(tmp_path / "a")
    _study(seeds=1, shift=0.25).save(tmp_path / "b")
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "no interval, as Welch's needs 2 seeds or more in each study" in result.output
    assert "[95% CI]" not in result.output and "excludes 0" not in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("features.2"))
    assert line.rstrip().endswith("+0.150")  # B's one seed (0.1 + 0.25) against A's mean 0.2


def _other_model(model: str = "resnet18", epochs: int = 10) -> Results:
    """The hand-made study as if of another model: other layer names, another config, an attribution."""
    other = _study()
    other.model = other.config["model"] = model
    other.config["train"] = {"epochs": epochs, "lr": 0.001}
    other.layers = [f"other.{layer}" for layer in LAYERS]
    for run in other.runs:
        run.probes = {p: {f"other.{k}": v for k, v in layers.items()} for p, layers in run.probes.items()}
        run.probes["attribution"] = {"model": {"gini": 0.6 + 0.01 * run.seed}}
    return other


def test_cli_compare_across_models_compares_what_they_share_and_lists_config_differences(tmp_path):
    a = _study()
    a.config.update(model="cnn4", train={"epochs": 5, "lr": 0.001})
    for run in a.runs:
        run.probes["attribution"] = {"model": {"gini": 0.5}}
    a.save(tmp_path / "a")
    _other_model().save(tmp_path / "b")
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")], terminal_width=160)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "model: cnn4 vs resnet18" in lines and "train.epochs: 5 vs 10" in lines
    assert "train.lr: 0.001 vs 0.001" not in lines and not any(line.startswith("samples_probed") for line in lines)
    assert "layers only in A: features.2, features.5" in lines
    assert "attribution — gini (mean ± std over seeds)" in result.output  # a model-scope probe is shared
    gini = next(line for line in lines if line.startswith("model ") and "0.500" in line)
    assert gini.split()[:6] == ["model", "bn", "0.500", "±", "0.000", "0.610"]
    assert "test acc (eval mode) (mean ± std over seeds)" in result.output
    assert "sparsity — channel_sparsity" not in result.output

    as_json = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert {"field": "model", "a": "cnn4", "b": "resnet18"} in data["config_differences"]
    assert {"field": "train.epochs", "a": 5, "b": 10} in data["config_differences"]
    assert len(data["config_differences"]) == 2
    cell = data["probes"]["attribution"]["model"]["gini"]["identity"]
    assert cell["a"] == {"mean": 0.5, "std": 0.0, "n": 3} and cell["b"]["mean"] == pytest.approx(0.61)
    assert cell["difference"]["estimate"] == pytest.approx(0.11)
    accuracy = data["probes"]["run"]["model"]["test_accuracy"]["bn"]
    assert accuracy["a"]["mean"] == pytest.approx(0.95) and accuracy["difference"]["estimate"] == pytest.approx(0.0)
    assert set(data["probes"]) == {"run", "attribution"} and data["only_in_one"]["layers"]["a"] == LAYERS
    assert data["a"]["model"] == "cnn4" and data["b"]["source"] == str(tmp_path / "b")


def test_cli_compare_refuses_studies_without_a_common_variant(tmp_path):
    _study().save(tmp_path / "a")
    other = _study()
    for run in other.runs:
        run.variant = f"{run.variant}2"
    other.save(tmp_path / "b")
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 2 and "share no variant" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_progress_has_a_capture_stage_counted_in_samples():
    listener = RichListener(console=Console(file=io.StringIO()))
    listener.study_started(total_runs=1)
    listener.capture_started("bn", 0, samples=300)
    listener.capture_batch("bn", 0, 256)
    task = listener.progress.tasks[-1]
    assert (task.description, task.completed, task.total) == ("capture bn seed 0", 256, 300)
    listener.__exit__(None, None, None)


def test_a_metric_that_is_0_everywhere_is_one_line_saying_so_not_a_column_of_zeros():
    results = _study()
    for run in results.runs:
        for layer in LAYERS:
            run.probes["sparsity"][layer]["channel_sparsity"] = 0.0
    text = _rendered(results, metrics=["channel_sparsity", "ari"])
    assert ("sparsity — channel_sparsity: every value is 0, at 2 layers in 6 runs; no table. channel_sparsity: "
            "mean over channels of the fraction of zeros") in " ".join(text.split())
    assert "channel_sparsity (mean ± std" not in text and "hdbscan — ari (mean ± std over 3 seeds)" in text
    results.runs[0].probes["sparsity"]["features.5"]["channel_sparsity"] = 0.01  # one value is not 0: a table
    assert "sparsity — channel_sparsity (mean ± std over 3 seeds)" in _rendered(results)


def test_zero_test_notes_survive_the_file_and_print_under_the_probes_tables(tmp_path):
    results = _study()
    tests = {"features.2": "a == 0 (relu)", "features.5": "a <= 0 (silu)"}
    for run in results.runs:
        run.notes = {"sparsity": {layer: {"zero_test": text} for layer, text in tests.items()}}
    results.save(tmp_path)
    results.save_csv(tmp_path)
    loaded = Results.load(tmp_path)
    assert [run.notes for run in loaded.runs] == [run.notes for run in results.runs]
    assert "zero_test" not in (tmp_path / "results.csv").read_text()  # words stay out of the numeric value column
    text = _rendered(loaded)
    sparsity, hdbscan = text.split("hdbscan — ari")
    assert "zero test: a == 0 (relu) at features.2; a <= 0 (silu) at features.5" in sparsity
    assert "zero test" not in hdbscan
    for run in loaded.runs:
        run.notes["sparsity"]["features.2"]["zero_test"] = "a <= 0 (silu)"
    assert "zero test: a <= 0 (silu) at every layer" in _rendered(loaded)


def test_a_note_that_is_not_text_is_refused_on_load(tmp_path):
    results = _study(seeds=1)
    results.runs[0].notes = {"sparsity": {"features.2": {"zero_test": 0.5}}}
    results.save(tmp_path)
    from bnprobe.errors import BnprobeError
    with pytest.raises(BnprobeError, match=r"note sparsity/features.2/zero_test is 0.5, not text"):
        Results.load(tmp_path)
