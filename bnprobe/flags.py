"""Named warnings about one run, for results a comparison should not silently rest on.

A flag is ``{"name": NAME, "message": what was seen}`` in :attr:`bnprobe.results.RunResult.flags`
(``results.json``); the report prints each one under its variant.  :data:`CHECKS` maps each name
to a check that reads the run's training numbers and the data it was trained on, and returns a
message or None; a new warning is one more entry there.

``at_chance``: the run's test accuracy is not above chance.  A model that guesses uniformly among
``C`` classes gets a Binomial(n, 1/C) count right on ``n`` test samples; the run is flagged when
its accuracy is at most ``q / n``, where ``q`` is that count's 95% quantile (one-sided: guessing
scores above the threshold less than 5% of the time).  Diverged runs are not checked -- the report
says they diverged.
"""

from __future__ import annotations

from collections.abc import Callable

from scipy.stats import binom

from bnprobe.data import Dataset
from bnprobe.train import TrainResult

CHANCE_QUANTILE = 0.95
"""How sure the at-chance threshold is that guessing stays under it."""


def chance_threshold(num_classes: int, samples: int, quantile: float = CHANCE_QUANTILE) -> float:
    """The accuracy guessing among ``num_classes`` stays at or below with probability ``quantile`` on
    ``samples`` samples: the Binomial(samples, 1/num_classes) quantile over ``samples``."""
    return float(binom.ppf(quantile, samples, 1 / num_classes)) / samples


def at_chance(trained: TrainResult, data: Dataset) -> str | None:
    """A message when ``trained``'s test accuracy is not above :func:`chance_threshold` (module docstring)."""
    if trained.diverged_at_epoch is not None or trained.test_accuracy is None or data.num_classes < 2:
        return None
    threshold = chance_threshold(data.num_classes, len(data.test))
    if trained.test_accuracy > threshold:
        return None
    return (f"test accuracy {trained.test_accuracy:.4g} is not above chance: guessing among {data.num_classes} "
            f"classes scores up to {threshold:.4g} on {len(data.test)} test samples "
            f"({CHANCE_QUANTILE:.0%} of the time); its representations say little about what it learnt")


CHECKS: dict[str, Callable[[TrainResult, Dataset], str | None]] = {"at_chance": at_chance}
"""Flag name -> its check, run on every trained run in this order."""


def run_flags(trained: TrainResult, data: Dataset) -> list[dict]:
    """The flags :data:`CHECKS` raise for one trained run, as ``{"name", "message"}`` dicts."""
    flags = []
    for name, check in CHECKS.items():
        message = check(trained, data)
        if message is not None:
            flags.append({"name": name, "message": message})
    return flags
