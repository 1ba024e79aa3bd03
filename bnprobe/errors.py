"""User-facing errors.

Everything a user can get wrong (a model name, a variant, a probe parameter, a data path) raises a
:class:`BnprobeError` whose message is one line saying what was wrong and what to do.  The CLI turns
it into that line and exit code 2; the Python API lets it propagate like any ``ValueError``.
"""

from __future__ import annotations


class BnprobeError(ValueError):
    """Bad input to bnprobe: the message says what was wrong and how to fix it."""


class UnknownNameError(BnprobeError):
    """A name (model, variant, probe, dataset, target) that is not registered."""


class NoBatchNormError(BnprobeError):
    """The model has no BatchNorm layer, so there is nothing to compare."""


class MissingExtraError(BnprobeError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C during a study.  ``finished`` lists the runs, as ``(variant, seed)``, whose numbers are in its
    ``results.json``: what a resumed study keeps."""

    def __init__(self, finished: list[tuple[str, int]]) -> None:
        super().__init__(f"interrupted after {len(finished)} finished runs")
        self.finished = finished
