"""What the CLI tests share: invoking ``bnprobe`` in-process, the one-line-error check, a finished study."""

from pathlib import Path

from click.testing import CliRunner

from bnprobe.cli import cli


def run_cli(*args):
    """``bnprobe ARGS`` in this process (paths and numbers given as they are)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *messages: str) -> None:
    """Bad input: exit 2, one line, no traceback, and every one of ``messages`` in it."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for message in messages:
        assert message in result.output, result.output


def finished_study(tmp_path_factory, options: list[str]) -> Path:
    """A finished ``bnprobe run cnn4 --variants bn,identity`` study with ``options``; its folder."""
    out = tmp_path_factory.mktemp("finished") / "study"
    result = run_cli("run", "cnn4", "--variants", "bn,identity", "--out", out, *options)
    assert result.exit_code == 0, result.output
    return out
