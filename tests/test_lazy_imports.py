"""The command line reads no torch to print help or list probes; the package imports what is used."""

import importlib
import subprocess
import sys

import pytest

import bnprobe

COMMANDS = ["compare", "merge", "probe", "probes", "report", "reproduce", "run", "surgery"]


def _heavy_modules_after(code: str) -> tuple[set[str], str]:
    """Which of torch and timm a fresh interpreter holds after running ``code``, and what it printed."""
    script = ("import sys\n" + code + "\nprint('HEAVY', *sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    assert last.startswith("HEAVY")
    return set(last.split()[1:]), "\n".join(printed)


def _cli(args: list[str]) -> str:
    return ("from bnprobe.cli import cli\n"
            f"try:\n    cli({args!r}, prog_name='bnprobe')\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code")


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in COMMANDS]],
                         ids=lambda args: " ".join(args))
def test_help_imports_neither_torch_nor_timm(args):
    heavy, printed = _heavy_modules_after(_cli(args))
    assert heavy == set()
    assert "Usage: bnprobe" in printed


def test_the_group_help_lists_every_command():
    _, printed = _heavy_modules_after(_cli(["--help"]))
    listed = [line.split()[0] for line in printed.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS


def test_listing_the_probes_imports_neither_torch_nor_timm():
    heavy, printed = _heavy_modules_after(_cli(["probes"]))
    assert heavy == set()
    for name in ("sparsity", "hdbscan", "attribution", "cka"):
        assert name in printed


def test_importing_bnprobe_imports_neither_and_using_it_imports_the_stage():
    heavy, _ = _heavy_modules_after("import bnprobe\nassert 'load_dataset' in dir(bnprobe)")
    assert heavy == set()
    heavy, printed = _heavy_modules_after("import bnprobe\nprint(bnprobe.TrainConfig().epochs)")
    assert "torch" in heavy and printed.strip().isdigit()


def test_the_capture_function_is_not_shadowed_by_the_capture_stage():
    capture_module = importlib.import_module("bnprobe.capture._capture")  # the stage is imported now
    assert bnprobe.capture is capture_module.capture
    from bnprobe import capture

    assert capture is capture_module.capture
    assert bnprobe.capture.__name__ == "capture" and callable(bnprobe.capture)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'bnprobe' has no attribute 'nosuch'"):
        bnprobe.nosuch  # noqa: B018
    surgery = importlib.import_module("bnprobe.surgery")
    with pytest.raises(AttributeError, match="module 'bnprobe.surgery' has no attribute 'nosuch'"):
        surgery.nosuch  # noqa: B018


def test_every_exported_name_resolves():
    for package in ["bnprobe", *[f"bnprobe.{s}" for s in
                                 ("models", "surgery", "data", "train", "capture", "probes", "report", "study",
                                  "reproduce")]]:
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
