"""The package's layering: each pipeline stage imports only from the stages below it.

The order is the pipeline's (docs/architecture.md): a stage may use what a lower one produces, never
the other way round, so that a stage can be read, tested and replaced without the ones above it.
The neutral modules (shared constants and helpers, errors, parameter checks) sit under every stage.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bnprobe"

NEUTRAL = ("_common", "_hints", "_lazy", "_seeds", "errors", "params")
STAGES = ("models", "surgery", "data", "train", "capture", "probes", "report", "study", "reproduce", "cli")
"""Bottom to top."""


def stage_of(module: str) -> int | None:
    """The layer of a ``bnprobe.*`` module: -1 for the neutral ones, None for the package itself."""
    parts = module.split(".")
    if parts[0] != "bnprobe" or len(parts) == 1 or parts[1] == "__main__":
        return None
    if parts[1] in NEUTRAL:
        return -1
    if parts[1] not in STAGES:
        raise AssertionError(f"{module} belongs to no stage: put it in one, or in the neutral modules")
    return STAGES.index(parts[1])


def imported_modules(source: str, module: str) -> set[str]:
    """Every ``bnprobe`` module ``source`` imports, at the top or inside a function."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "bnprobe":  # from bnprobe import stage_module
                found.update(f"bnprobe.{alias.name}" for alias in node.names)
            else:
                found.add(base)
    return {name for name in found if name == "bnprobe" or name.startswith("bnprobe.")}


def upward_imports(source: str, module: str) -> list[str]:
    """The imports in ``source`` (the text of ``module``) that reach a stage above ``module``'s."""
    own = stage_of(module)
    if own is None:
        return []
    bad = []
    for target in sorted(imported_modules(source, module)):
        theirs = stage_of(target)
        if target == "bnprobe" or (theirs is not None and theirs > own):
            bad.append(f"{module} imports {target}")
    return bad


def package_modules() -> list[tuple[str, str]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules.append((name, path.read_text(encoding="utf-8")))
    return modules


def test_no_stage_imports_a_stage_above_it():
    bad = [line for name, source in package_modules() for line in upward_imports(source, name)]
    assert not bad, "imports that go up the pipeline:\n" + "\n".join(bad)


def test_every_module_is_in_a_stage_or_neutral():
    for name, _ in package_modules():
        stage_of(name)  # raises for a module outside every stage


def test_every_stage_is_a_package_with_a_docstring():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"bnprobe/{stage}/ is not a package"
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"bnprobe/{stage}/__init__.py says nothing"


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("from bnprobe.study._run import run_study\n", "bnprobe.capture._capture",
     ["bnprobe.capture._capture imports bnprobe.study._run"]),
    ("def f():\n    import bnprobe.cli\n", "bnprobe.report._files", ["bnprobe.report._files imports bnprobe.cli"]),
    ("from bnprobe import reproduce\n", "bnprobe.train._loop", ["bnprobe.train._loop imports bnprobe.reproduce"]),
    ("from ..study import run_study\n", "bnprobe.probes.runner", ["bnprobe.probes.runner imports bnprobe.study"]),
    ("import bnprobe\n", "bnprobe.data._loaders", ["bnprobe.data._loaders imports bnprobe"]),
    ("from bnprobe.data._loaders import Split\nfrom bnprobe.errors import BnprobeError\n", "bnprobe.train._loop", []),
    ("from bnprobe.capture._capture import capture\n", "bnprobe.capture._fx", []),
])
def test_the_check_catches_an_import_that_goes_up(source, module, expected):
    assert upward_imports(source, module) == expected


def test_a_module_outside_every_stage_is_named():
    with pytest.raises(AssertionError, match="bnprobe.helpers belongs to no stage"):
        stage_of("bnprobe.helpers")
