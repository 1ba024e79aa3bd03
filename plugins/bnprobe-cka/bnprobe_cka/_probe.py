"""``cka``: linear CKA of each layer with the same layer of the ``bn`` run."""

from __future__ import annotations

from typing import Any

from bnprobe.errors import BnprobeError
from bnprobe.probes.base import REFERENCE_VARIANT, LayerData, Probe, ProbeContext
from bnprobe.probes.metrics import Metric
from bnprobe_cka._linear import ESTIMATOR_DOC, check_debiased, linear_cka


class CKAProbe(Probe):
    """Linear CKA of each layer with the same layer of the ``bn`` run of the same seed."""

    description = "linear CKA between this layer and the same layer of the BatchNorm (bn) run"
    needs = "vectors"
    scope = "layer"
    key_metric = "cka"
    metrics = {"cka": Metric("linear centred kernel alignment (Kornblith et al. 2019) of this layer's vectors with "
                             "the same layer's in the bn run of the same seed (1 in the bn run itself); "
                             f"{ESTIMATOR_DOC}; null when either is constant",
                             "0 (no shared linear structure) to 1 (same up to rotation and scale); debiased: -1 to 1, "
                             "about 0 when independent")}
    compares_with_reference = True  # a study without the bn variant is refused before it trains

    def __init__(self, *, debiased: bool = False, **unknown: Any) -> None:
        super().__init__(**unknown)
        self.debiased = check_debiased(debiased)

    def measure(self, layer: LayerData, context: ProbeContext) -> dict[str, float]:
        """``{"cka": value}``; the ``bn`` run compares the layer with itself."""
        variant = context.stated_variant(self.key)
        reference = context.reference(layer.name)
        if reference is None:
            if variant != REFERENCE_VARIANT:
                raise BnprobeError(f"probe cka: no {REFERENCE_VARIANT} run to compare layer {layer.name} of "
                                   f"{variant} with; add the {REFERENCE_VARIANT} variant to the study, or pass "
                                   f"its capture: run_probes(..., reference=...) (and probe layers in both models)")
            reference = layer
        return {"cka": linear_cka(reference.vectors(), layer.vectors(), context.device, self.debiased)}
