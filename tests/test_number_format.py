"""Printed numbers: digits follow the spread, so no nonzero spread or starred difference reads as zero;
the run lines name what was measured and wrap cleanly at 80 columns."""

import re

import pytest
from rich.console import Console

from bnprobe.report import Results, RunResult, render
from bnprobe.report._stats import Difference, Summary, decimals_for, format_value, paired_difference
from bnprobe.report._terminal import RUN_MEASURES


def _parts(text: str) -> list[float]:
    """Every number in a printed cell."""
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]\d+)?", text)]


def test_ordinary_numbers_keep_three_decimals():
    assert str(Summary(0.962, 0.010, 3)) == "0.962 ± 0.010"
    assert str(Difference(0.1, 0.05, 0.15, 3)) == "+0.100 [+0.050, +0.150] *"
    assert str(Difference(-0.012, -0.05, 0.03, 3)) == "-0.012 [-0.050, +0.030]"
    assert str(Summary(0.5, None, 1)) == "0.500"


def test_large_numbers_stay_readable():
    assert str(Summary(12.0, 3.2, 3)) == "12.000 ± 3.200"  # n_clusters
    assert str(Summary(1234.5, 250.0, 3)) == "1234.500 ± 250.000"


def test_tiny_spread_gets_the_decimals_for_two_significant_digits():
    # 1e-5 scale: with 3 fixed decimals this printed 0.000 ± 0.000.
    assert str(Summary(1.234e-5, 2.1e-6, 3)) == "0.0000123 ± 0.0000021"
    assert format_value(1.2e-5) == "0.000012"
    assert decimals_for(0.0042) == 4 and decimals_for(0.042) == 3 and decimals_for(0.5) == 3


def test_a_starred_tiny_difference_never_prints_as_zero():
    # The custom metric: values at the 1e-5 scale, a consistent difference over 3 seeds.
    values = {0: 3.1e-5, 1: 3.4e-5, 2: 2.9e-5}
    reference = {0: 1.2e-5, 1: 1.3e-5, 2: 1.1e-5}
    d = paired_difference(values, reference)
    assert d.excludes_zero
    text = str(d)
    assert text.endswith(" *")
    estimate, low, high = _parts(text)
    assert estimate != 0 and low > 0 and high > 0
    assert estimate == pytest.approx(d.estimate, rel=0.05) and low == pytest.approx(d.low, rel=0.05)


def test_past_the_cap_numbers_switch_to_scientific_notation():
    assert str(Summary(1e-12, 3e-13, 2)) == "1.00e-12 ± 3.00e-13"
    assert str(Difference(2e-12, 1e-12, 3e-12, 3)) == "+2.00e-12 [+1.00e-12, +3.00e-12] *"


@pytest.mark.parametrize("exponent", range(-1, -12, -1))
def test_no_nonzero_spread_prints_as_zero(exponent):
    std = 3.7 * 10.0 ** exponent
    mean, shown = _parts(str(Summary(0.25, std, 4)))
    assert shown == pytest.approx(std, rel=0.02)  # 2 significant digits: 3.7
    interval = _parts(str(Difference(std, 0.1 * std, 1.9 * std, 4)))
    assert all(x != 0 for x in interval)


def _study(variants=("bn", "identity", "groupnorm"), seeds=3, flag=False) -> Results:
    runs = []
    for seed in range(seeds):
        for i, variant in enumerate(variants):
            runs.append(RunResult(variant=variant, seed=seed, train_accuracy=0.9 - 0.01 * i + 0.001 * seed,
                                  test_accuracy=0.85 - 0.02 * i + 0.002 * seed, final_loss=0.3 + 0.01 * seed,
                                  test_loss=0.4 + 0.01 * i, epochs_run=2, swap={"n_swapped": 4},
                                  probes={"custom": {"features.2": {"score": (1 + i) * (1e-5 + 1.2e-7 * seed)}}},
                                  flags=[{"name": "at_chance", "message": "test accuracy 0.1 is not above chance"}]
                                  if flag and variant == "identity" and seed == 0 else []))
    return Results(model="cnn4", dataset="digits", config={"samples_probed": 10}, runs=runs,
                   layers=["features.2"])


@pytest.mark.parametrize("width", [80, 120])
def test_run_lines_wrap_cleanly(width):
    console = Console(record=True, width=width, file=open("/dev/null", "w"))
    render(_study(flag=True), console)
    lines = console.export_text().splitlines()
    for _, label in RUN_MEASURES:  # each phrase whole on a line, then its number, once per variant
        assert sum(re.match(rf"\s*{re.escape(label)}  +\d", line) is not None for line in lines) == 3, label
    assert sum(re.match(r"\s*test acc \(eval mode\) − bn  +[-+]\d", line) is not None for line in lines) == 2
    assert sum("! seed 0 at_chance:" in line for line in lines) == 1
    assert all(len(line.rstrip()) <= width for line in lines)


def test_the_tiny_custom_metric_table_shows_its_difference():
    console = Console(record=True, width=120, file=open("/dev/null", "w"))
    render(_study(), console)
    rows = " ".join(line for line in console.export_text().splitlines() if line.startswith("features.2"))
    assert "0.000 " not in rows and "0.000]" not in rows
    # identity − bn is 1e-5 + 1.2e-7·seed: mean 1.012e-5, sd 1.2e-7, half-width t(0.975, 2)·1.2e-7/√3 = 2.98e-7
    assert "+0.00001012 [+0.00000982, +0.00001042] *" in rows
    assert "0.00001012 ± 0.00000012" in rows  # bn's own mean ± std


def test_a_study_with_one_variant_says_there_is_nothing_to_compare():
    console = Console(record=True, width=80, file=open("/dev/null", "w"))
    render(_study(variants=("bn",)), console)
    text = console.export_text()
    assert sum("nothing to compare" in line for line in text.splitlines()) == 1
    assert "Δ" not in text
