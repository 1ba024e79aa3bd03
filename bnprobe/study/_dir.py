"""A study's output folder: which of its files are the study's, refusing to replace them, removing them.

bnprobe writes into ``--out`` the files of :data:`STUDY_FILES`, ``plots/NAME.png`` with ``plots/NAME.csv`` beside it,
``checkpoints/<variant>-seed<k>.pt``, ``cache/<variant>-seed<k>/`` and ``robustness/results.json``
(:mod:`bnprobe.reproduce._robustness`) (and, for a moment, the ``.NAME.*.tmp`` files of atomic writes beside them).
Those are the study's; anything else a user keeps there -- in ``plots/``, ``checkpoints/`` or ``cache/``
too -- is not, and is never removed.

A folder holds a study when it has ``results.json`` or run checkpoints.  :func:`check_out_dir`
refuses to start a study in one unless it is resumed or overwritten; :func:`remove_study` is what
overwriting removes first: every study file there, those of runs the new study does not have
included.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from bnprobe._common import SAFE_CHARS
from bnprobe._hints import option, setting
from bnprobe.errors import BnprobeError
from bnprobe.report._results import Results
from bnprobe.report._stats import STATS_CSV_COLUMNS
from bnprobe.train._state import CHECKPOINT_DIR

STUDY_FILES = ("results.json", "results.csv", "history.csv", "verdicts.json", "robustness.json")
"""The files a study (``bnprobe run``, ``bnprobe reproduce``) writes at the top of its folder."""
_RUN = rf"[{SAFE_CHARS}]+-seed\d+"  # :func:`bnprobe.train.run_stem`
_TEMP = r"\.{name}\.[^/]*\.tmp"  # :func:`bnprobe.report._results.write_atomic`'s temporary files
_OWN = {"": "|".join(re.escape(name) for name in STUDY_FILES),
        "plots": r"[^/]+\.(?:png|csv)",
        CHECKPOINT_DIR: rf"{_RUN}\.pt",
        "cache": rf"{_RUN}|task-[0-9a-f]+",  # a run's capture cache; a Ray task's (bnprobe.study._ray)
        "robustness": "|".join(re.escape(name) for name in STUDY_FILES)}  # bnprobe.reproduce.ROBUSTNESS_DIR
"""Per folder of the output folder (``""`` is the folder itself): a pattern of the names that are the study's."""


def check_out_dir(out: str | Path | None, *, resume: bool, overwrite: bool,
                  reads: Sequence[str | Path | None] = (), can_resume: bool = True) -> None:
    """Refuse to start a study in ``out`` where one already is, unless it is resumed or overwritten.

    Overwriting is refused too when the new study ``reads`` a file it would remove (``--checkpoint``
    pointing at the old study's weights).  Called before anything trains or is written, so a refused
    study leaves the folder as it was.  ``can_resume`` False (``bnprobe merge``, which cannot continue a
    study) leaves resuming out of the advice.
    """
    if resume and overwrite:
        raise BnprobeError(f"{option('resume')} and {option('overwrite')} do not go together: the first continues "
                           f"the study in {out}, the second replaces it; give one")
    if out is None or resume:
        return
    if overwrite:
        removed = {path.resolve() for folder in _OWN for path in _own(Path(out), folder)}
        needed = next((path for path in reads if path is not None and Path(path).resolve() in removed), None)
        if needed is not None:
            raise BnprobeError(f"{option('overwrite')} would remove {needed}, which this study reads; copy it out "
                               f"of {out} first, or give another {setting('out')}")
        return
    held = held_study(out)
    if held:
        resume_it = f"continue it with {option('resume')}, or " if can_resume else ""
        raise BnprobeError(f"{out} already holds a study ({', '.join(held)}); {resume_it}replace it with "
                           f"{option('overwrite')} (which removes only the study's files)")


def held_study(out: str | Path) -> list[str]:
    """What of a study ``out`` holds: ``results.json`` and the number of run checkpoints, where present."""
    out = Path(out)
    held = ["results.json"] if (out / "results.json").is_file() else []
    runs = [path for path in _own(out, CHECKPOINT_DIR) if not path.name.startswith(".")]
    if runs:
        held.append(f"{len(runs)} run checkpoint{'s' * (len(runs) != 1)} in {CHECKPOINT_DIR}/")
    return held


def saved_runs(out: str | Path | None) -> list[tuple[str, int]]:
    """The runs, as ``(variant, seed)``, in the ``results.json`` of ``out`` (none when it has no readable one)."""
    try:
        return [(run.variant, run.seed) for run in Results.load(out).runs] if out is not None else []
    except (BnprobeError, OSError):
        return []


def remove_study(out: str | Path) -> None:
    """Remove the study files in ``out`` (and ``plots/``, ``checkpoints/``, ``cache/`` once empty); keep the rest."""
    out = Path(out)
    for folder in _OWN:
        for path in _own(out, folder):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if folder:
            with contextlib.suppress(OSError):  # not there, or it holds the user's own files
                (out / folder).rmdir()


def _own(out: Path, folder: str) -> list[Path]:
    """The study's entries in ``out/folder``: its named files and their temporary files.

    In ``plots/`` a figure is the study's when the CSV of its numbers lies beside it (``NAME.png`` and
    ``NAME.csv`` headed by :data:`bnprobe.report.STATS_CSV_COLUMNS`), so a user's own figures stay.
    """
    where = out / folder
    if not where.is_dir():
        return []
    pattern = re.compile(rf"(?:{_OWN[folder]})|{_TEMP.format(name=f'(?:{_OWN[folder]})')}")
    own = [path for path in where.iterdir() if pattern.fullmatch(path.name)]
    if folder == "plots":
        drawn = {path.stem for path in own if path.suffix == ".csv" and _is_stats_csv(path)}
        own = [path for path in own if path.stem in drawn or path.name.startswith(".")]
    return sorted(own)


def _is_stats_csv(path: Path) -> bool:
    """Whether ``path`` is a CSV of plotted numbers as :func:`bnprobe.report.write_outputs` writes them."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n") == ",".join(STATS_CSV_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False
