"""No number is ever cut: at 80 columns and in a pipe, every table folds or drops a column, and says so,
but prints no ``…`` (issue 31, point 6)."""

import re

import pytest
from click.testing import CliRunner
from test_report import _study

from bnprobe.cli import cli


def _narrow(*args, width: int = 80):
    result = CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": str(width)}, terminal_width=width)
    assert result.exit_code == 0, result.output
    assert not re.search(r"\S…", result.output), result.output  # a sparkline's legend spans "▁ 0.2 … █ 0.6"
    return result.output


@pytest.mark.parametrize("width", [80, 50])
def test_compare_keeps_every_number_and_the_star(tmp_path, width):
    _study().save(tmp_path / "a")
    _study(shift=0.3).save(tmp_path / "b")
    output = _narrow("compare", tmp_path / "a", tmp_path / "b", width=width)
    assert any(line.rstrip().endswith("*") for line in output.splitlines()), output  # bn at features.2: the star
    if width == 80:  # wide enough for each row on one line
        assert re.search(r"\+0\.300 \[\+0\.0\d\d, \+0\.5\d\d\] \*", output), output


def test_report_keeps_every_number(tmp_path):
    _study().save(tmp_path)
    output = _narrow("report", tmp_path, "--no-plots", "--metrics", "all")
    assert "0.200 ± 0.100" in output.replace("\n", " ") or "0.200" in output


def test_surgery_shows_whole_names_and_the_group_count():
    output = _narrow("surgery", "resnet18", "--to", "groupnorm:8")
    assert "layer4.1.bn2" in output and "GroupNorm(8," in output
    assert "old type: BatchNorm2d in every row" in output.replace("\n", " ")


def test_compare_counts_one_seed_as_one_seed(tmp_path):
    _study().save(tmp_path / "a")
    _study(seeds=1).save(tmp_path / "b")
    output = _narrow("compare", tmp_path / "a", tmp_path / "b", width=200)
    assert "× 1 seed " in output and "1 seeds" not in output
