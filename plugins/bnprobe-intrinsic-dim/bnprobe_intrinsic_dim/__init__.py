"""``intrinsic_dim``: the intrinsic dimension of each captured layer's representation, by scikit-dimension.

TwoNN (Facco, d'Errico, Rodriguez & Laio, *Estimating the intrinsic dimension of datasets by a minimal
neighborhood information*, Scientific Reports 2017) by default, or another global estimator of
``skdim.id`` (:data:`ESTIMATORS`), on the layer's distinct per-sample vectors.

* ``_names`` -- the estimators offered (:data:`ESTIMATORS`);
* ``_estimate`` -- duplicates, the subsample, TwoNN's neighbour search and skdim's fit (:func:`estimate`);
* ``_probe`` -- the probe (:class:`IntrinsicDimProbe`).

An ordinary installed package: its ``pyproject.toml`` names :class:`IntrinsicDimProbe` in the
``bnprobe.probes`` entry-point group, and bnprobe finds it there.  ``skdim`` (and numba under it) is
imported only when a layer is measured, so listing the probes stays fast.
"""

from typing import Any

from bnprobe_intrinsic_dim._names import ESTIMATORS
from bnprobe_intrinsic_dim._probe import IntrinsicDimProbe

__all__ = ["ESTIMATORS", "Estimate", "IntrinsicDimProbe", "estimate", "two_nearest"]
_ESTIMATE = ("Estimate", "estimate", "two_nearest")


def __getattr__(name: str) -> Any:
    """The estimator's names from ``_estimate``, imported (with torch) when first asked for."""
    if name in _ESTIMATE:
        from bnprobe_intrinsic_dim import _estimate

        return getattr(_estimate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
