"""Advice in the words of the interface in use: a command-line flag under ``bnprobe``, a keyword in Python.

An error's advice names an option to change.  The same check runs under ``bnprobe run`` and under
:func:`bnprobe.run_study`, so its message cannot spell the option itself: a command-line user needs
``--resume``, a notebook user ``resume=True``.  The command line marks its commands with
:func:`command_line_in_use`; :func:`option` spells an option set to a value as the interface in use
does, :func:`setting` its bare name, and :func:`in_words` picks between two spellings where the two
interfaces name a setting differently (``--fine-tune`` against ``mode='fine-tune'``).  Standard library
only: any module may import this.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

_COMMAND_LINE: ContextVar[bool] = ContextVar("bnprobe_command_line", default=False)


@contextmanager
def command_line_in_use() -> Iterator[None]:
    """Within the block, advice is spelled as ``bnprobe``'s flags (the command line wraps each command in it)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def in_words(*, cli: str, python: str) -> str:
    """``cli`` under the command line, else ``python``: one piece of advice as each interface spells it."""
    return cli if _COMMAND_LINE.get() else python


def setting(name: str) -> str:
    """The option ``name`` (a Python keyword) alone, as the interface in use names it.

    ``--data-root`` on the command line, ``data_root`` in Python.
    """
    return in_words(cli="--" + name.replace("_", "-"), python=name)


def option(name: str, value: object = True) -> str:
    """The option ``name`` (a Python keyword, ``data_root``) set to ``value``, as the interface in use spells it.

    On the command line ``--data-root VALUE``, a bare ``--resume`` for True and ``--no-NAME`` for
    False, a sequence as a comma list; in Python ``data_root='VALUE'``, ``resume=True``, a list.
    """
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        cli = flag if value else f"--no-{name.replace('_', '-')}"
    elif isinstance(value, Sequence) and not isinstance(value, str):
        cli = f"{flag} {','.join(map(str, value))}"
    else:
        cli = f"{flag} {value}"
    shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
    return in_words(cli=cli, python=f"{name}={shown!r}")
