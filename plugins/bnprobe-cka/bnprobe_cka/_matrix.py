"""``cka_matrix``: linear CKA between every layer of a run and every layer of the ``bn`` run, and
:func:`cka_matrix` for any two captures (two seeds of one variant, say).

The probe is model-scoped: it reads every captured layer at once, computes each Gram matrix once for
the whole matrix, and files the numbers by layer -- ``cka``, the diagonal, the number the ``cka``
probe gives for that layer, and ``bn:<layer>``, one per layer of the ``bn`` run.  Declaring
``layer_matrix = "bn:"`` has the report draw the matrix of each variant as a heatmap, the mean over
seeds (``plots/cka_matrix_heatmap.png``, with the numbers in a CSV beside it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bnprobe.errors import BnprobeError
from bnprobe.probes.base import REFERENCE_VARIANT, LayerData, Probe, ProbeContext
from bnprobe.probes.metrics import Metric
from bnprobe_cka._linear import ESTIMATOR_DOC, Matrix, check_debiased, cka_matrix_values

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

COLUMN_PREFIX = f"{REFERENCE_VARIANT}:"
"""What the metric of a column is called before the ``bn`` run's layer name: ``bn:features.5``."""


class CKAMatrixProbe(Probe):
    """Linear CKA of every layer of the run with every layer of the ``bn`` run of the same seed."""

    description = "linear CKA between every layer of this run and every layer of the BatchNorm (bn) run"
    needs = "vectors"
    scope = "model"
    key_metric = "cka"
    layer_matrix = COLUMN_PREFIX
    metrics = {
        "cka": Metric("linear CKA of this layer's vectors with the same layer's in the bn run of the same seed: the "
                      "matrix's diagonal, the cka probe's number with the same debiased (1 in the bn run itself); "
                      "null when either is constant", "0 (no shared linear structure) to 1 (same up to rotation and "
                      "scale); debiased: -1 to 1, about 0 when independent"),
        f"{COLUMN_PREFIX}<layer>": Metric("linear CKA (Kornblith et al. 2019) of this layer's vectors with those of "
                                          "<layer> in the bn run of the same seed: one cell of the layer-by-layer "
                                          f"matrix; {ESTIMATOR_DOC}", "0 to 1; debiased: -1 to 1"),
    }
    compares_with_reference = True  # a study without the bn variant is refused before it trains

    def __init__(self, *, debiased: bool = False, **unknown: Any) -> None:
        super().__init__(**unknown)
        self.debiased = check_debiased(debiased)

    def measure(self, layer: LayerData | None, context: ProbeContext) -> dict[str, dict[str, float]]:
        """``{layer: {"cka": diagonal, "bn:<bn layer>": value, ...}}`` for every captured layer."""
        variant = context.stated_variant(self.key)
        rows, columns = list(context.layers), list(context.reference_layers)
        if not rows:
            raise BnprobeError(f"probe {self.key}: the run has no captured layers to compare")
        if not columns and variant != REFERENCE_VARIANT:
            raise BnprobeError(f"probe {self.key}: no {REFERENCE_VARIANT} run to compare the layers of {variant} "
                               f"with; add the {REFERENCE_VARIANT} variant to the study, or pass its capture: "
                               "run_probes(..., reference=...)")
        values = cka_matrix_values([row.vectors() for row in rows],
                                   [column.vectors() for column in columns] or None, context.device,
                                   self.debiased)
        names = [column.name for column in columns or rows]
        filed = {}
        for row, cells in zip(rows, values, strict=True):
            numbers = {f"{COLUMN_PREFIX}{name}": float(value) for name, value in zip(names, cells, strict=True)}
            if row.name in names:
                numbers = {"cka": float(cells[names.index(row.name)]), **numbers}
            filed[row.name] = numbers
        return filed


@dataclass(frozen=True)
class CKAMatrix:
    """Linear CKA of every layer of one capture (rows) with every layer of another (columns)."""

    values: np.ndarray
    """``(len(rows), len(columns))``; NaN where a layer is constant over the samples."""
    rows: list[str]
    columns: list[str]
    row_label: str = "a"
    column_label: str = "b"
    debiased: bool = False
    """Whether the values are the debiased estimator's (unbiased HSIC)."""

    def figure(self, title: str = "") -> Figure:
        """The matrix as a heatmap, the layers named on its axes (a matplotlib Figure)."""
        from bnprobe.report import heatmap_figure

        return heatmap_figure({f"{self.row_label} vs {self.column_label}": self.values}, self.rows, self.columns,
                              title or self.measure, row_axis=f"layer of {self.row_label}",
                              column_axis=f"layer of {self.column_label}", value=self.measure)

    @property
    def measure(self) -> str:
        """What the values are: ``linear CKA`` or ``debiased linear CKA``."""
        return "debiased linear CKA" if self.debiased else "linear CKA"


def cka_matrix(a: Any, b: Any, device: torch.device | str = "cpu", debiased: bool = False) -> CKAMatrix:
    """Linear CKA of every layer of ``a`` with every layer of ``b``, over the same samples.

    ``debiased``: with the unbiased HSIC estimator (Song et al. 2012) instead of the biased one.

    ``a`` and ``b`` are captures (:func:`bnprobe.capture`: two seeds of one variant, loaded with
    :func:`bnprobe.load_run`, or two variants) or ``{layer: (samples, ...) tensor or array}``.  Each
    layer is compared as one vector per sample, as the probes see it.
    """
    (rows, row_label), (columns, column_label) = _layers(a, "a"), _layers(b, "b")
    if hasattr(a, "inputs") and hasattr(b, "inputs") and None not in (a.inputs, b.inputs) and (
            a.inputs.shape != b.inputs.shape or not bool((a.inputs == b.inputs).all())):
        raise BnprobeError("the two captures were made on other samples; capture both on the same samples in the "
                           "same order (not a shuffled loader)")
    values = cka_matrix_values(list(rows.values()), list(columns.values()), device, debiased)
    return CKAMatrix(values, list(rows), list(columns), row_label, column_label, debiased)


def _layers(source: Any, default_label: str) -> tuple[dict[str, Matrix], str]:
    """``({layer: (samples, features)}, label)`` of a capture or of ``{layer: activations}``."""
    if isinstance(source, Mapping):
        return {str(name): _flat(value) for name, value in source.items()}, default_label
    if hasattr(source, "layers") and hasattr(source, "variant"):
        stated = [f"{source.variant}" if source.variant is not None else "",
                  f"seed {source.seed}" if source.seed is not None else ""]
        return {layer.name: layer.vectors() for layer in source.layers}, " ".join(filter(None, stated)) or default_label
    raise BnprobeError(f"cka_matrix compares two captures (bnprobe.capture) or two {{layer: activations}} mappings; "
                       f"got {type(source).__name__}")


def _flat(value: Any) -> Matrix:
    """Activations ``(samples, ...)`` as ``(samples, features)``."""
    if hasattr(value, "detach"):
        value = value.detach()
    else:
        value = np.asarray(value)
    return value.reshape(value.shape[0], -1)
