"""Which version of each probe measured a study's runs, so that old and new numbers never mix.

A probe's numbers can change under the same key: ``binary_patterns`` got a new default threshold in
its version 2 (:attr:`bnprobe.probes.Probe.version`).  A study saves ``probe_versions`` (probe key ->
version) in its config.  Resuming it with another version of a probe would file new runs beside
runs measured the old way, in one table and one interval, so it is refused with the fix: probe the
study again (``bnprobe probe``, :func:`bnprobe.study.reprobe_study`), which measures every run under
the current version and records it.  A study saved before versions were recorded ran every probe at
version 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bnprobe._hints import in_words
from bnprobe.errors import BnprobeError
from bnprobe.probes import Probe

VERSIONS_FIELD = "probe_versions"
"""The config field: ``{probe key: version}``."""
UNRECORDED_VERSION = 1
"""The version of every probe of a study saved before versions were recorded."""


def probe_versions(probes: Sequence[Probe]) -> dict[str, int]:
    """``{key: version}`` of ``probes``: what a new study, or a probe pass over one, records."""
    return {probe.key: probe.version for probe in probes}


def saved_versions(config: Mapping) -> dict[str, int]:
    """The versions a saved study's config records (an empty dict when it predates them: see
    :data:`UNRECORDED_VERSION`)."""
    return dict(config.get(VERSIONS_FIELD) or {})


def check_same_versions(saved: Mapping, current: Mapping[str, int], out_dir: Path) -> None:
    """Refuse to resume the study saved in ``out_dir`` (its config ``saved``) when one of its probes
    measured its runs under another version than ``current`` (this bnprobe's)."""
    before = saved_versions(saved)
    changed = [(key, before.get(key, UNRECORDED_VERSION), version) for key, version in current.items()
               if before.get(key, UNRECORDED_VERSION) != version]
    if not changed:
        return
    said = ", ".join(f"{key} version {old} (this bnprobe's is {new})" for key, old, new in changed)
    keys = [key for key, _, _ in changed]
    again = in_words(cli=f"bnprobe probe {out_dir} --probes {','.join(keys)}",
                     python=f"bnprobe.reprobe_study({str(out_dir)!r}, probes={keys!r})")
    raise BnprobeError(f"cannot resume the study in {out_dir}: its runs were measured with {said}, whose numbers "
                       f"differ; measure them again first ({again}), or start the study again in another folder")
