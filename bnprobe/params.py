"""Parameter checks with messages that name the parameter and what it accepts.

Probes, targets and configs validate in ``__init__`` the scikit-learn way: fail early, say which
parameter was wrong and what values it takes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bnprobe.errors import BnprobeError


def split_list(text: str) -> list[str]:
    """``"bn, identity,"`` -> ``["bn", "identity"]``: a comma list as the command line takes it."""
    return [item.strip() for item in text.split(",") if item.strip()]


def check_int(owner: str, name: str, value: Any, *, minimum: int | None = None,
              allow_none: bool = False) -> int | None:
    """Return ``value`` as an int, or raise a one-line error naming ``owner.name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        extra = " or none" if allow_none else ""
        raise BnprobeError(f"{owner}: {name} must be an integer{extra}, got {value!r}")
    if minimum is not None and value < minimum:
        raise BnprobeError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def check_float(owner: str, name: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a float within the bounds (above 0 if ``positive``), or raise a one-line error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BnprobeError(f"{owner}: {name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise BnprobeError(f"{owner}: {name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise BnprobeError(f"{owner}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise BnprobeError(f"{owner}: {name} must be <= {maximum}, got {value}")
    return float(value)


def check_choice(owner: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = list(choices)
    if value not in choices:
        raise BnprobeError(f"{owner}: {name} must be one of {', '.join(choices)}; got {value!r}")
    return value
