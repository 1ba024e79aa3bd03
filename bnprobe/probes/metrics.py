"""What a probe's numbers mean: each probe class declares its metrics once, in :attr:`Probe.metrics`.

A declaration (:class:`Metric`) gives the definition, the range and the direction -- whether a
higher value is better, worse, or neither (most metrics here describe a representation and judge
nothing).  A name may hold a placeholder in angle brackets, ``class_sparsity_<label>``, standing for
a family (one metric per class label).  ``bnprobe probes --metrics`` lists the declarations, and
``docs/metrics.md`` holds their tables as :func:`metrics_markdown` writes them (a test checks both
against what the probes emit); ``bnprobe.probes.metrics.rewrite("docs/metrics.md")`` rewrites them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bnprobe._common import write_atomic
from bnprobe.errors import BnprobeError

if TYPE_CHECKING:
    from bnprobe.probes._registry import ProbeInfo

Direction = Literal["higher is better", "lower is better", "neither"]

DOCUMENTED_SOURCES = ("built-in", "bnprobe-cka", "bnprobe-intrinsic-dim")
"""The probes whose metrics ``docs/metrics.md`` documents: bnprobe's own and the plugins in ``plugins/``."""
BEGIN, END = "<!-- metrics: begin (generated) -->", "<!-- metrics: end -->"
"""The markers around the generated part of ``docs/metrics.md``."""


@dataclass(frozen=True)
class Metric:
    """One metric a probe emits: what it is, the values it takes and which way is better."""

    definition: str
    range: str
    direction: Direction = "neither"


def declared(metrics: Mapping[str, Metric], name: str) -> str | None:
    """The declared name (``class_sparsity_<label>`` for ``class_sparsity_3``) that covers ``name``, or None.

    A name declared as it is wins over a family (``class_sparsity_spread`` is not a class label).
    """
    if name in metrics:
        return name
    for pattern in metrics:
        parts = re.split(r"(<[^>]+>)", pattern)
        if re.fullmatch("".join(".+" if part.startswith("<") else re.escape(part) for part in parts), name):
            return pattern
    return None


def _cell(text: str) -> str:
    """``text`` as a Markdown table cell: ``|`` escaped, and ``<`` so that ``<label>`` is not read as HTML."""
    return text.replace("|", r"\|").replace("<", "&lt;")


def metrics_markdown(infos: Sequence[ProbeInfo]) -> str:
    """The generated part of ``docs/metrics.md``: per probe, its defaults and a table of its metrics."""
    lines = []
    for info in infos:
        params = ", ".join(f"`{k}={v!r}`" for k, v in info.cls.param_defaults().items()) or "none"
        lines += [f"### `{info.name}` ({info.source}, scope {info.cls.scope}, key metric `{info.cls.key_metric}`)",
                  "", f"{info.cls.description}. Parameters and defaults: {params}.", "",
                  "| metric | definition | range | direction |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {_cell(m.definition)} | {_cell(m.range)} | {m.direction} |"
                  for name, m in info.cls.metrics.items()]
        lines.append("")
    return "\n".join([BEGIN, "", *lines, END])


def documented_probes() -> list[ProbeInfo]:
    """The registered probes of :data:`DOCUMENTED_SOURCES`, by name."""
    from bnprobe.probes._registry import list_probes

    return [info for info in list_probes() if info.source in DOCUMENTED_SOURCES]


def generated_part(text: str) -> str:
    """The part of ``text`` between :data:`BEGIN` and :data:`END`, markers included ("" if absent)."""
    start, end = text.find(BEGIN), text.find(END)
    return text[start:end + len(END)] if 0 <= start < end else ""


def rewrite(path: str | Path) -> None:
    """Replace the generated part of the Markdown file at ``path`` with :func:`metrics_markdown`."""
    text = Path(path).read_text(encoding="utf-8")
    old = generated_part(text)
    if not old:
        raise BnprobeError(f"{path} has no {BEGIN} ... {END} part to rewrite; add the two markers")
    write_atomic(path, text.replace(old, metrics_markdown(documented_probes())))

