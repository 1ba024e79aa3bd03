"""Named warnings about one run, for results a comparison should not silently rest on.

A flag is ``{"name": NAME, "message": what was seen}`` in :attr:`bnprobe.report.RunResult.flags`
(``results.json``); the report prints each one under its variant.  :data:`CHECKS` maps each name
to a check that reads the run's training numbers (a :class:`bnprobe.train.TrainResult`, or a saved
:class:`bnprobe.report.RunResult`: :class:`RunNumbers`) and the data it was trained on, and returns
a message or None; a new warning is one more entry there.

``at_chance``: the run's test accuracy is not above chance.  A model that guesses uniformly among
``C`` classes gets a Binomial(n, 1/C) count right on ``n`` test samples; the run is flagged when
its accuracy is at most ``q / n``, where ``q`` is that count's 95% quantile (one-sided: guessing
scores above the threshold less than 5% of the time).  Diverged runs are not checked -- the report
says they diverged -- nor untrained reference runs (a study's ``init`` variant), which are at chance
by design: that is the number they are there to show.

``eval_below_train``: the run's eval-mode test accuracy ``a_eval`` is far below its test accuracy with
BatchNorm on batch statistics ``a_train`` (train mode, :attr:`bnprobe.train.TrainResult.train_mode_test_accuracy`):
the same weights classify well, but the BatchNorm running statistics that eval mode -- the reported
accuracy and every captured activation -- rests on lag behind them.  "Far" is both of:

* beyond binomial noise: ``a_train - a_eval > z * sqrt(2 p (1 - p) / n)``, with ``n`` test samples,
  ``p = (a_train + a_eval) / 2`` and ``z`` the one-sided 95% normal quantile (1.645) -- the two
  accuracies taken as independent proportions, which overstates the noise of two measurements on the
  same samples, so it flags less, not more;
* and more than :data:`EVAL_MARGIN` (0.1): a gap that changes what a comparison says.

So with 360 test samples the gap must exceed 0.1 whenever the binomial bound is smaller (it is
at most 0.061 there); with 50 it must exceed up to 0.164.  Models without BatchNorm running
statistics (both modes compute the same), diverged runs and runs without a test split are not
checked.  ``--recalibrate-bn`` recomputes the statistics after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from scipy.stats import binom, norm

from bnprobe._hints import option
from bnprobe.data._loaders import Dataset

CHANCE_QUANTILE = 0.95
"""How sure the at-chance threshold is that guessing stays under it."""
EVAL_QUANTILE = 0.95
"""How sure the eval-below-train threshold is that noise alone stays under it."""
EVAL_MARGIN = 0.1
"""The least gap between train-mode and eval-mode test accuracy that is flagged, however many samples."""


class RunNumbers(Protocol):
    """What a check reads of a run: a :class:`bnprobe.train.TrainResult` or a :class:`bnprobe.report.RunResult`."""

    test_accuracy: float | None
    train_mode_test_accuracy: float | None
    diverged_at_epoch: int | None


def chance_threshold(num_classes: int, samples: int, quantile: float = CHANCE_QUANTILE) -> float:
    """The accuracy guessing among ``num_classes`` stays at or below with probability ``quantile`` on
    ``samples`` samples: the Binomial(samples, 1/num_classes) quantile over ``samples``."""
    return float(binom.ppf(quantile, samples, 1 / num_classes)) / samples


def at_chance(trained: RunNumbers, data: Dataset) -> str | None:
    """A message when ``trained``'s test accuracy is not above :func:`chance_threshold` (module docstring)."""
    if trained.diverged_at_epoch is not None or trained.test_accuracy is None or data.num_classes < 2:
        return None
    threshold = chance_threshold(data.num_classes, len(data.test))
    if trained.test_accuracy > threshold:
        return None
    return (f"test accuracy {trained.test_accuracy:.4g} is not above chance: guessing among {data.num_classes} "
            f"classes scores up to {threshold:.4g} on {len(data.test)} test samples "
            f"({CHANCE_QUANTILE:.0%} of the time); its representations say little about what it learnt")


def eval_gap_threshold(eval_accuracy: float, train_accuracy: float, samples: int,
                       quantile: float = EVAL_QUANTILE, margin: float = EVAL_MARGIN) -> float:
    """The gap ``train_accuracy - eval_accuracy`` on ``samples`` test samples that :func:`eval_below_train`
    needs to exceed: the larger of the binomial noise bound and ``margin`` (module docstring)."""
    p = (eval_accuracy + train_accuracy) / 2
    return max(float(norm.ppf(quantile)) * math.sqrt(2 * p * (1 - p) / samples), margin)


def eval_below_train(trained: RunNumbers, data: Dataset) -> str | None:
    """A message when ``trained``'s eval-mode test accuracy is far below its batch-statistics one (module docstring)."""
    a_eval, a_train = trained.test_accuracy, trained.train_mode_test_accuracy
    if trained.diverged_at_epoch is not None or a_eval is None or a_train is None or not len(data.test):
        return None
    threshold = eval_gap_threshold(a_eval, a_train, len(data.test))
    if a_train - a_eval <= threshold:
        return None
    return (f"test accuracy {a_eval:.4g} in eval mode, {a_train:.4g} with BatchNorm on batch statistics: the gap "
            f"exceeds {threshold:.2g} on {len(data.test)} test samples, so the running statistics that eval "
            f"mode and the captured activations use lag behind the weights; rerun with {option('recalibrate_bn')}")


CHECKS: dict[str, Callable[[RunNumbers, Dataset], str | None]] = {"at_chance": at_chance,
                                                                  "eval_below_train": eval_below_train}
"""Flag name -> its check, run on every trained run in this order."""
EXPECTED_UNTRAINED = ("at_chance",)
"""The checks an untrained reference run (``untrained`` in :func:`run_flags`) passes over: what they flag is
what such a run shows by design."""


def run_flags(trained: RunNumbers, data: Dataset, *, untrained: bool = False) -> list[dict]:
    """The flags :data:`CHECKS` raise for one run, as ``{"name", "message"}`` dicts; ``untrained`` marks
    a reference left untrained on purpose (a study's ``init``), which :data:`EXPECTED_UNTRAINED` skip."""
    flags = []
    for name, check in CHECKS.items():
        if untrained and name in EXPECTED_UNTRAINED:
            continue
        message = check(trained, data)
        if message is not None:
            flags.append({"name": name, "message": message})
    return flags
