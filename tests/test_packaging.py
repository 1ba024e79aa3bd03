"""The package declares what it imports, and its version has one source."""

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires, version
from pathlib import Path

import bnprobe

PACKAGE = Path(bnprobe.__file__).parent


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``, which only type checkers import."""
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for child in node.body for n in ast.walk(child)}
    return [node for node in ast.walk(tree) if id(node) not in typing_only]


def _imported_top_levels() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"bnprobe"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """The install requirements, without the extras: an import bnprobe makes must not need an extra."""
    lines = [line for line in requires("bnprobe") or [] if "extra ==" not in line]
    return {_normalise(re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0]) for line in lines}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = packages_distributions()
    declared = _declared()
    undeclared = {}
    for module in sorted(_imported_top_levels()):
        owners = {_normalise(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_the_directly_used_helpers_are_declared():
    assert {"scipy", "threadpoolctl", "pillow"} <= _declared()


def test_version_comes_from_the_installed_metadata():
    assert bnprobe.__version__ == version("bnprobe")
    init = (PACKAGE / "__init__.py").read_text()
    assert not re.search(r"__version__\s*=\s*['\"]", init), "the version is written out a second time"
