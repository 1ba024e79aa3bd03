"""Every hint names an option of the interface in use: the failing command's flags on the command line,
keyword arguments from Python (issue 31, point 5)."""

import ast
import re
from pathlib import Path

import pytest
from _cli import finished_study, run_cli

import bnprobe
from bnprobe.cli import cli
from bnprobe.errors import BnprobeError
from bnprobe.study import StudyConfig, run_study
from bnprobe.study._shards import merge_studies

TINY = ["--dataset", "tiny-study", "--epochs", "1", "--samples", "16", "--batch-size", "32", "--device", "cpu",
        "--probes", "sparsity", "--quiet"]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
API = Path(bnprobe.__file__).parent


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    return finished_study(tmp_path_factory, TINY)


def _flags(command: str) -> set[str]:
    return {flag for param in cli.get_command(None, command).params for flag in param.opts}


def _cli_situations(held: Path, tmp: Path) -> list[tuple[str, list]]:
    """(command, arguments) that fail with advice."""
    return [("run", ["run", "cnn4", *TINY, "--out", held]),
            ("run", ["run", "cnn4", *TINY, "--out", held, "--resume", "--overwrite"]),
            ("run", ["run", "cnn4", *TINY, "--out", held, "--resume", "--lr", "0.5"]),
            ("run", ["run", "cnn4", *TINY, "--out", tmp / "x", "--probe-only", "--seeds", "2",
                     "--init-weights", held / "checkpoints" / "bn-seed0.pt"]),
            ("run", ["run", "cnn4", *TINY, "--out", tmp / "y", "--device", "meta"]),
            ("probe", ["probe", tmp / "nothing-here"]),
            ("merge", ["merge", held, tmp / "a", tmp / "b"]),
            ("merge", ["merge", tmp / "m", tmp / "a"])]


def test_command_line_hints_name_only_the_commands_flags(held, tmp_path):
    for command, args in _cli_situations(held, tmp_path):
        result = run_cli(*args)
        assert result.exit_code == 2 and "Usage:" not in result.output, (args, result.output)
        assert set(FLAG.findall(result.output)) <= _flags(command), (command, result.output)


def test_merge_into_a_held_folder_offers_only_overwrite(held, tmp_path):
    result = run_cli("merge", held, tmp_path / "a")
    assert "--overwrite" in result.output and "resume" not in result.output, result.output
    with pytest.raises(BnprobeError, match=r"overwrite=True") as caught:
        merge_studies(held, [tmp_path / "a"])
    assert "resume" not in str(caught.value)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({}, ["resume=True", "overwrite=True"]),
    ({"resume": True, "overwrite": True}, ["resume=True and overwrite=True"]),
])
def test_python_hints_name_keyword_arguments(held, kwargs, words):
    config = StudyConfig(model="cnn4", dataset="tiny-study", probes=["sparsity"], device="cpu")
    with pytest.raises(BnprobeError) as caught:
        run_study(config, out=held, **kwargs)
    assert all(word in str(caught.value) for word in words) and not FLAG.search(str(caught.value)), caught.value


def test_python_config_and_device_hints_are_keywords():
    for make in (lambda: StudyConfig(model="cnn4", mode="probe-only", init_weights="w.pt", seeds=2),
                 lambda: bnprobe.train.resolve_device("meta")):
        with pytest.raises(BnprobeError) as caught:
            make()
        assert not FLAG.search(str(caught.value)), caught.value


def _literal_flags(node: ast.AST) -> list[str]:
    """Flags spelled out in the strings of ``node``, outside ``in_words(cli=...)`` and `backticked` commands."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "in_words":
        return [flag for keyword in node.keywords if keyword.arg != "cli" for flag in _literal_flags(keyword.value)]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return FLAG.findall(re.sub(r"`[^`]*`", "", node.value))
    return [flag for child in ast.iter_child_nodes(node) for flag in _literal_flags(child)]


def test_no_api_message_spells_a_flag_itself():
    """Outside the command line, an error's advice goes through bnprobe._hints, so Python users read keywords."""
    found = []
    for path in sorted(API.rglob("*.py")):
        if "cli" in path.relative_to(API).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                found += [f"{path.relative_to(API)}:{node.lineno}: {flag}" for flag in _literal_flags(node.exc)]
    assert not found, found
