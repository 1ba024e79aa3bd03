"""The docs cannot drift from the API: every code block they show is run or parsed here.

* ```python blocks run each on its own, in a fresh namespace and a temporary folder of its own, with
  the probe registry (and the model, dataset and norm-target registries) restored afterwards, so a
  block a reader copies alone has every import it needs.  A block that goes on from the one before
  it says so, visibly, on the line before its fence::

      <!-- continues: the block above -->

  and runs after the previous ```python block of the same file, in its namespace, folder and
  registries (a chain of such blocks shares the namespace of the first block that does not continue).
  The example in ``bnprobe/__init__``'s docstring runs the same way.
* ```bash (``sh``, ``shell``) blocks: every command that calls ``bnprobe`` (``bnprobe ...``,
  ``python -m bnprobe ...``, ``torchrun ... -m bnprobe ...``) must name existing subcommands and
  only existing options, with the arguments they take; it is parsed with click, not run.

A block whose code (or whose chain's code) reads a study's output folder (``OUT/...``) finds a small
real one there: cnn4 on digits, ``bn`` and ``identity``, 2 seeds, 1 epoch, written by
:func:`bnprobe.run_study` once per session.  A block that cannot run here (it needs a GPU, a download,
hours) is marked in the markdown on the line before its fence, visibly::

    <!-- no-test: needs a GPU -->

and is skipped with that reason (and so is every block that continues it).  Either marker must sit
right before a code block (the two may both precede one, in either order), a no-test marker must say
why, and a continues marker must precede a ```python block that has one above it in the same file.
The files are found, not listed: README.md, docs/*.md and every plugins/*/README.md, so docs added
later are tested too.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

import bnprobe
from bnprobe.cli import cli
from bnprobe.data import _loaders
from bnprobe.models import _registry as _models
from bnprobe.probes import _registry as base
from bnprobe.surgery import _skipinit, _targets

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = sorted({ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "plugins").glob("*/README.md")})
PYTHON, SHELL = ("python", "py"), ("bash", "sh", "shell")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
NO_TEST = re.compile(r"^\s*<!--\s*no-test:\s*(.*?)\s*-->\s*$")
CONTINUES = re.compile(r"^\s*<!--\s*continues\b\s*(.*?)\s*-->\s*$")
CONTINUES_MARKER = "<!-- continues: the block above -->"
COMMAND_SEPARATORS = {"&&", "||", ";", "|"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")


@dataclass
class Block:
    """One fenced code block: where it is, its language, its code, and why it is not tested (if so)."""

    path: Path
    line: int
    """The line of its first line of code (1-based), so that tracebacks point into the file."""
    lang: str
    code: str
    skip: str | None = None
    continues: bool = False
    """Marked ``<!-- continues: the block above -->``: it runs after the previous Python block of its file."""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def markdown_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, with the ``no-test`` and ``continues`` markers that precede each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    where = path.relative_to(ROOT)
    blocks: list[Block] = []
    skip: tuple[int, str] | None = None  # a no-test marker's line and reason, waiting for its fence
    continues: int | None = None  # a continues marker's line, waiting for its fence
    i = 0
    while i < len(lines):
        no_test, goes_on, fence = NO_TEST.match(lines[i]), CONTINUES.match(lines[i]), FENCE.match(lines[i])
        if no_test:
            assert skip is None, f"{where}:{i + 1}: two no-test markers in a row"
            assert no_test.group(1), f"{where}:{i + 1}: a no-test marker must say why"
            skip = (i + 1, no_test.group(1))
        elif goes_on:
            assert continues is None, f"{where}:{i + 1}: two continues markers in a row"
            assert re.fullmatch(r":\s*the block above", goes_on.group(1)), (
                f"{where}:{i + 1}: a continues marker reads {CONTINUES_MARKER}")
            continues = i + 1
        elif fence:
            indent, ticks, lang = fence.groups()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(ticks)
                        and not lines[j].strip().strip(ticks[0])), None)
            assert end is not None, f"{where}:{i + 1}: unclosed code block"
            if continues is not None:
                assert lang.lower() in PYTHON, (
                    f"{where}:{continues}: a continues marker must be right before a python block")
                assert any(b.lang in PYTHON for b in blocks), (
                    f"{where}:{continues}: a continues marker needs a python block above it to continue")
            code = textwrap.dedent("\n".join(lines[i + 1:end]))
            blocks.append(Block(path, i + 2, lang.lower(), code, skip[1] if skip else None, continues is not None))
            skip, continues, i = None, None, end
        elif lines[i].strip():
            _assert_nothing_pending(where, skip, continues)
        i += 1
    _assert_nothing_pending(where, skip, continues)
    return blocks


def _assert_nothing_pending(where: Path, skip: tuple[int, str] | None, continues: int | None) -> None:
    """A marker met prose (or the end of the file) before its code block."""
    pending = [(line, kind) for line, kind in ((skip and skip[0], "no-test"), (continues, "continues")) if line]
    if pending:
        line, kind = min(pending)
        raise AssertionError(f"{where}:{line}: a {kind} marker must be right before a code block")


def docstring_example(module) -> Block:
    """The ``::`` literal block of a module's docstring (its example), as a Python block."""
    path = Path(module.__file__)
    text = path.read_text(encoding="utf-8")
    doc = module.__doc__
    head, sep, rest = doc.partition("::\n")
    assert sep, f"{path} has no '::' example in its docstring"
    lines = rest.splitlines()
    body = [line for line in lines[1:next((k for k, line in enumerate(lines[1:], 1)
                                              if line.strip() and not line.startswith(" ")), len(lines))]]
    line = text[:text.index(doc)].count("\n") + head.count("\n") + 3
    return Block(path, line, "python", textwrap.dedent("\n".join(body)))


PYTHON_BLOCKS = [b for path in DOC_FILES for b in markdown_blocks(path) if b.lang in PYTHON]
SHELL_BLOCKS = [b for path in DOC_FILES for b in markdown_blocks(path) if b.lang in SHELL]
EXAMPLES = [docstring_example(bnprobe)]


@dataclass
class _Run:
    """The state a block and the blocks that continue it share: their namespace, folder and probe registry."""

    folder: Path
    registry: dict
    tables: dict = field(default_factory=dict)
    """The other registries (models, norm targets, skipinit blocks, datasets) as these blocks left them."""
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    done: set[int] = field(default_factory=set)
    failed: str | None = None


_RUNS: dict[tuple[Path, int], _Run] = {}
"""One per block that does not continue another, by its file and line: what it and its continuations share."""

REGISTRIES = [(_models, "_BUILTINS"), (_targets, "TARGETS"), (_skipinit, "_LAST_CONV"), (_loaders, "_DATASETS")]


def _execute(block: Block, run: _Run) -> None:
    # dont_inherit: the block runs as a reader's file would, without this module's `from __future__` imports
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec", dont_inherit=True)
    try:
        exec(code, run.namespace)
    except BaseException:
        run.failed = block.id
        raise
    finally:
        run.done.add(block.line)


def chain(block: Block, blocks: list[Block]) -> list[Block]:
    """The Python blocks ``block`` runs after, then itself: back to the nearest one of its file (itself, if
    it is not marked ``continues``) that does not continue the block above."""
    same = [b for b in blocks if b.path == block.path and b.lang in PYTHON and b.line <= block.line]
    assert same and same[-1] is block, f"{block.id} is not among the blocks given"
    first = max(k for k, b in enumerate(same) if not b.continues)
    return same[first:]


def _continuations(first: Block, blocks: list[Block]) -> list[Block]:
    """``first`` and every block that continues it, directly or through another."""
    later = [b for b in blocks if b.path == first.path and b.lang in PYTHON and b.line > first.line]
    group = [first]
    for b in later:
        if not b.continues:
            break
        group.append(b)
    return group


@pytest.fixture(scope="session")
def study_out(tmp_path_factory) -> Path:
    """A small finished study's output folder, as ``bnprobe run`` leaves it, for blocks that read ``OUT/``."""
    out = tmp_path_factory.mktemp("study") / "OUT"
    config = bnprobe.StudyConfig(model="cnn4", variants="bn,identity", seeds=2, samples=100, probes="sparsity",
                                 train={"epochs": 1}, device="cpu")
    bnprobe.write_outputs(bnprobe.run_study(config, out=out), out)
    return out


def run_block(block: Block, blocks: list[Block], runs: dict[tuple[Path, int], _Run], monkeypatch,
              tmp_path_factory, request) -> None:
    """Run ``block`` as the docs test does: after the blocks it continues (those not run yet), in their
    namespace, folder and registries, or, if it continues none, in fresh ones."""
    blocks_before = chain(block, blocks)
    skipped = next((b for b in blocks_before if b.skip), None)
    if skipped is block:
        pytest.skip(f"marked no-test: {block.skip}")
    if skipped is not None:
        pytest.skip(f"continues {skipped.id}, marked no-test: {skipped.skip}")
    first = blocks_before[0]
    key = (first.path, first.line)
    if key not in runs:
        base.list_probes()  # the real registry, plugins loaded, before a block registers its own probes
        _loaders.list_datasets()  # likewise the built-in datasets and models, which register when first listed
        _models.list_models()
        runs[key] = _Run(tmp_path_factory.mktemp(f"{first.path.stem}-{first.line}"), dict(base._REGISTRY))
        if any("OUT/" in b.code for b in _continuations(first, blocks)):
            shutil.copytree(request.getfixturevalue("study_out"), runs[key].folder / "OUT")
    run = runs[key]
    monkeypatch.chdir(run.folder)
    monkeypatch.setattr(base, "_REGISTRY", run.registry)  # what the blocks register stays theirs
    for module, name in REGISTRIES:
        monkeypatch.setattr(module, name, run.tables.setdefault(name, dict(getattr(module, name))))
    for before in blocks_before[:-1]:
        if before.line not in run.done:
            _execute(before, run)  # this block was selected alone: run what it continues first
    if run.failed is not None:
        pytest.fail(f"a block this one continues failed ({run.failed})")
    _execute(block, run)


@pytest.mark.parametrize("block", PYTHON_BLOCKS + EXAMPLES, ids=lambda b: b.id)
def test_python_block_runs(block: Block, monkeypatch, tmp_path_factory, request):
    run_block(block, PYTHON_BLOCKS + EXAMPLES, _RUNS, monkeypatch, tmp_path_factory, request)


def bnprobe_commands(code: str) -> list[list[str]]:
    """The argument lists of the ``bnprobe`` calls in a shell block (comments and continuations handled)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        start = 0
        for k in [*(k for k, word in enumerate(words) if word in COMMAND_SEPARATORS), len(words)]:
            command = words[start:k]
            start = k + 1
            while command and ENV_ASSIGNMENT.match(command[0]):  # FOO=1 bnprobe ...
                command = command[1:]
            if command[:1] == ["bnprobe"]:
                commands.append(command[1:])
            elif "-m" in command[:-1] and command[command.index("-m") + 1] == "bnprobe":
                commands.append(command[command.index("-m") + 2:])
    return commands


def check_command(args: list[str]) -> None:
    """Parse ``bnprobe ARGS`` as click would, without converting values or running anything."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="bnprobe")
    while True:
        try:
            values, rest, _ = command.make_parser(ctx).parse_args(list(args))
        except click.UsageError as exc:
            raise AssertionError(f"`{ctx.command_path}`: {exc.format_message()}") from None
        if not isinstance(command, click.Group) or not rest:
            break
        name, args = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`{ctx.command_path}` has no subcommand {name!r}; it has {', '.join(command.commands)}"
        command, ctx = sub, click.Context(sub, parent=ctx, info_name=name)
    if values.get("help"):
        return
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    assert not rest or isinstance(command, click.Group), f"`{ctx.command_path}` takes no more arguments: {rest}"
    missing = [p.name for p in arguments if p.required and not _given(values.get(p.name))]
    assert not missing, f"`{ctx.command_path}` needs its {', '.join(missing)} argument"


def _given(value: object) -> bool:
    """Whether the parser got a value for an argument: a string, or a tuple of them (a missing one is
    None, an empty tuple, or a sentinel, depending on click's version)."""
    return isinstance(value, str) or (isinstance(value, tuple) and bool(value))


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: b.id)
def test_bnprobe_commands_exist(block: Block):
    if block.skip:
        pytest.skip(f"marked no-test: {block.skip}")
    for args in bnprobe_commands(block.code):
        check_command(args)


def test_the_docs_show_commands_and_code_to_check():
    assert ROOT / "docs" / "getting-started.md" in DOC_FILES and ROOT / "plugins/bnprobe-cka/README.md" in DOC_FILES
    assert sum(len(bnprobe_commands(b.code)) for b in SHELL_BLOCKS) >= 10
    assert sum(not b.skip for b in PYTHON_BLOCKS) >= 10


@pytest.mark.parametrize(("line", "expected"), [
    ("bnprobe run resnet18 --epochs 1   # a comment", [["run", "resnet18", "--epochs", "1"]]),
    ("git clone <this repository> bnprobe && cd bnprobe", []),
    ("pip install -e plugins/bnprobe-cka && bnprobe probes", [["probes"]]),
    ("torchrun --nproc-per-node 4 -m bnprobe run resnet18 \\\n  --out runs/c10", [["run", "resnet18", "--out",
                                                                                   "runs/c10"]]),
    ("CUDA_VISIBLE_DEVICES=0 bnprobe report 'runs/my study'", [["report", "runs/my study"]]),
])
def test_bnprobe_calls_are_found_in_shell_lines(line, expected):
    assert bnprobe_commands(line) == expected


@pytest.mark.parametrize(("args", "message"), [
    (["rnu", "resnet18"], "`bnprobe` has no subcommand 'rnu'"),
    (["run", "resnet18", "--epocs", "1"], r"`bnprobe run`: No such option '--epocs'"),
    (["report"], "`bnprobe report` needs its out argument"),
    (["report", "a", "b"], r"`bnprobe report` takes no more arguments: \['b'\]"),
    (["run", "--epochs"], "`bnprobe run`: Option '--epochs' requires an argument"),
])
def test_a_wrong_command_line_is_caught(args, message):
    with pytest.raises(AssertionError, match=message):
        check_command(args)
    check_command(["run", "resnet18", "--epochs", "1", "--probes", "sparsity,cka"])  # while a right one passes


def test_a_marker_must_say_why_and_sit_right_before_a_block(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- no-test: needs a GPU -->\n```python\nimport torch\n```\n\n```bash\nbnprobe probes\n```\n")
    assert [(b.line, b.lang, b.code, b.skip) for b in markdown_blocks(doc)] == [
        (3, "python", "import torch", "needs a GPU"), (7, "bash", "bnprobe probes", None)]
    doc.write_text("<!-- no-test: needs a GPU -->\nSome prose.\n```python\nimport torch\n```\n")
    with pytest.raises(AssertionError, match="doc.md:1: a no-test marker must be right before a code block"):
        markdown_blocks(doc)
    doc.write_text("<!-- no-test: -->\n```python\nimport torch\n```\n")
    with pytest.raises(AssertionError, match="doc.md:1: a no-test marker must say why"):
        markdown_blocks(doc)


def test_a_failing_block_fails_pointing_at_its_line_in_the_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    block = Block(tmp_path / "doc.md", 7, "python", "x = 1\nundefined_name")
    run = _Run(tmp_path, {})
    with pytest.raises(NameError) as raised:
        _execute(block, run)
    last = traceback.extract_tb(raised.tb)[-1]
    assert (last.filename, last.lineno) == (str(tmp_path / "doc.md"), 8)
    assert run.failed == block.id and run.namespace["x"] == 1


def test_a_block_does_not_inherit_the_future_imports_of_this_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    # annotations are evaluated as in a reader's own script, so one that names an unimported class fails
    with pytest.raises(NameError, match="'LayerData' is not defined"):
        _execute(Block(tmp_path / "doc.md", 1, "python", "def measure(layer: LayerData): ..."), _Run(tmp_path, {}))


def _python_blocks(tmp_path: Path, monkeypatch, text: str) -> list[Block]:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    return [b for b in markdown_blocks(doc) if b.lang in PYTHON]


def test_a_block_runs_alone_unless_it_continues_the_block_above(tmp_path, monkeypatch, tmp_path_factory, request):
    first, second, third, alone = _python_blocks(tmp_path, monkeypatch, (
        "```python\nx = 1\n```\n\nProse.\n\n" + CONTINUES_MARKER + "\n```python\ny = x + 1\n```\n\n"
        "```bash\nbnprobe probes\n```\n\n" + CONTINUES_MARKER + "\n```python\nassert (x, y) == (1, 2)\n```\n\n"
        "```python\nprint(x)\n```\n"))
    assert [b.continues for b in (first, second, third, alone)] == [False, True, True, False]
    assert chain(third, [first, second, third, alone]) == [first, second, third]
    runs: dict = {}
    run_block(third, [first, second, third, alone], runs, monkeypatch, tmp_path_factory, request)  # selected alone:
    assert list(runs) == [(first.path, first.line)]  # the blocks it continues ran first, in its namespace
    assert runs[first.path, first.line].done == {first.line, second.line, third.line}
    with pytest.raises(NameError, match="'x' is not defined"):  # a block that does not continue starts afresh
        run_block(alone, [first, second, third, alone], runs, monkeypatch, tmp_path_factory, request)


def test_a_block_that_continues_a_no_test_block_is_skipped(tmp_path, monkeypatch, tmp_path_factory, request):
    blocks = _python_blocks(tmp_path, monkeypatch, (
        "<!-- no-test: needs a GPU -->\n```python\nx = 1\n```\n\n"
        + CONTINUES_MARKER + "\n<!-- no-test: hours -->\n```python\ny = 2\n```\n\n"  # both markers: either order
        + CONTINUES_MARKER + "\n```python\nprint(x)\n```\n"))
    assert [(b.skip, b.continues) for b in blocks] == [("needs a GPU", False), ("hours", True), (None, True)]
    with pytest.raises(pytest.skip.Exception, match="continues doc.md:3, marked no-test: needs a GPU"):
        run_block(blocks[2], blocks, {}, monkeypatch, tmp_path_factory, request)


@pytest.mark.parametrize(("text", "message"), [
    (CONTINUES_MARKER + "\n```python\nx = 1\n```\n", "doc.md:1: a continues marker needs a python block above it"),
    ("```bash\nls\n```\n" + CONTINUES_MARKER + "\n```python\nx = 1\n```\n",
     "doc.md:4: a continues marker needs a python block above it"),
    ("```python\nx = 1\n```\n" + CONTINUES_MARKER + "\nSome prose.\n```python\nx\n```\n",
     "doc.md:4: a continues marker must be right before a code block"),
    ("```python\nx = 1\n```\n" + CONTINUES_MARKER + "\n```bash\nls\n```\n",
     "doc.md:4: a continues marker must be right before a python block"),
    ("```python\nx = 1\n```\n" + CONTINUES_MARKER + "\n" + CONTINUES_MARKER + "\n```python\nx\n```\n",
     "doc.md:5: two continues markers in a row"),
    ("```python\nx = 1\n```\n<!-- continues: the block at line 1 -->\n```python\nx\n```\n",
     "doc.md:4: a continues marker reads <!-- continues: the block above -->"),
    ("```python\nx = 1\n```\n" + CONTINUES_MARKER + "\n",
     "doc.md:4: a continues marker must be right before a code block"),
])
def test_a_misplaced_continues_marker_is_rejected(tmp_path, monkeypatch, text, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        _python_blocks(tmp_path, monkeypatch, text)
