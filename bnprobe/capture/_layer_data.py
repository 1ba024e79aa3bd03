"""What capture hands the probes: one :class:`LayerData` per captured layer, and the
:class:`Accumulator` protocol streaming probes fold batches into while the model runs.

Capture sits below the probes, so it knows a probe only as a :class:`ProbeInterface`: what it
reads (``needs``) and, for a streaming probe, a ``key`` and an accumulator per layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bnprobe.errors import BnprobeError

if TYPE_CHECKING:
    import torch


class Accumulator(Protocol):
    """Running state of a streaming probe for one layer of one run."""

    def update(self, activations: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold in one batch: ``activations`` is ``(batch, channels, *spatial)`` as the layer gave it."""

    def result(self) -> dict[str, float]:
        """The probe's numbers for everything seen so far."""


class ProbeInterface(Protocol):
    """What capture reads of a probe (a :class:`bnprobe.Probe`)."""

    needs: str
    """``"stream"``: fed batch by batch through accumulators; ``"vectors"``: reads the stored vectors."""

    @property
    def key(self) -> str:
        """The name the probe's accumulators are filed under in :attr:`LayerData.accumulators`."""

    def accumulator(self, layer: str, shape: tuple[int, ...]) -> Accumulator:
        """A fresh accumulator for one layer of one run."""


@dataclass
class LayerData:

    """What capture hands a probe about one captured layer of one run."""

    name: str
    shape: tuple[int, ...]
    """Per-sample activation shape, e.g. ``(channels, height, width)``."""
    labels: np.ndarray
    """Class label of each probed sample, ``(samples,)``."""
    accumulators: dict[str, Accumulator] = field(default_factory=dict)
    """Streaming probes' state, keyed by :attr:`Probe.key`."""
    load_vectors: Callable[[], np.ndarray] | None = None
    """The stored vectors as a host array in the storage dtype (set by capture)."""
    load_tensor: Callable[[torch.device], torch.Tensor] | None = None
    """The stored vectors as a float32 tensor on a device (set by capture; optional)."""
    activation: str | None = None
    """The activation function this layer is the output of, as :func:`bnprobe.capture.activation_name`
    and :func:`~bnprobe.capture.functional_activation` name it (``"relu"``, ``"silu"``, ...); None for
    a layer that is no activation (a conv, a norm).  Capture sets it."""

    def vectors(self) -> np.ndarray:
        """The per-sample representation vectors, ``(samples, features)`` float32, on the host.

        Vectors capture kept on a GPU are copied to the host, this layer only.
        """
        if self.load_vectors is None:
            raise BnprobeError(f"layer {self.name}: no vectors were captured (capture with vectors=True)")
        return np.asarray(self.load_vectors(), dtype=np.float32)

    def vectors_tensor(self, device: torch.device | str) -> torch.Tensor:
        """:meth:`vectors` as a float32 tensor on ``device``; treat it as read-only.

        Vectors capture kept on that device are read there, without a host round trip; host and
        disk vectors cross the bus in their storage dtype.
        """
        import torch

        if self.load_tensor is not None:
            return self.load_tensor(torch.device(device))
        if self.load_vectors is None:
            raise BnprobeError(f"layer {self.name}: no vectors were captured (capture with vectors=True)")
        return torch.from_numpy(self.vectors()).to(device)


def new_accumulator(probe: ProbeInterface, layer: str, shape: tuple[int, ...], activation: str | None) -> Accumulator:
    """``probe.accumulator(layer, shape)``, with ``activation=`` too when the accumulator takes that keyword.

    Capture makes every accumulator here: a probe whose statistics depend on the activation (sparsity's
    zero test) asks for it by its signature, and one written for the two-argument protocol works as it is.
    """
    if "activation" in inspect.signature(probe.accumulator).parameters:
        return probe.accumulator(layer, shape, activation=activation)
    return probe.accumulator(layer, shape)
