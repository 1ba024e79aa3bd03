"""Probes on activations from anywhere -- TorchLens, nnsight, captum's ``LayerActivation``, hooks of
your own -- reported exactly as a study's (:func:`probe_activations`).

Each run is ``{layer: activations}``, every tensor or array ``(samples, ...)`` over the same samples
in the same order (the labels'), on any device, float16 or float32.  Streaming probes (sparsity) fold
the activations in batch by batch, as capture would have fed them; vector probes (hdbscan, cka) read
them flattened per sample, in float32.  Probes that run the model itself (attributions) need a
study or :func:`bnprobe.capture`: there is no model here.  Several runs tagged with their variant
and seed give the statistics across seeds and the paired comparison with the ``bn`` run of each
seed, as a study does; the runs' own numbers (accuracies) are null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bnprobe._common import REFERENCE_VARIANT
from bnprobe.capture._capture import CaptureResult
from bnprobe.capture._layer_data import LayerData, new_accumulator
from bnprobe.errors import BnprobeError
from bnprobe.probes import Probe, ProbeContext, build_probes, start_probes
from bnprobe.probes.runner import reference_layers, reference_lookup
from bnprobe.report._results import GIVEN_ACTIVATIONS, Results, RunResult
from bnprobe.train._loop import resolve_device

BATCH = 256
"""Samples fed to a streaming probe's accumulator at a time."""


@dataclass(frozen=True)
class ActivationRun:
    """One run's activations for :func:`probe_activations`, with the variant and seed it is of."""

    activations: Mapping[str, Any]
    variant: str = REFERENCE_VARIANT
    seed: int = 0


def probe_activations(activations: Mapping[str, Any] | Sequence[ActivationRun], labels: Any,
                      probes: str | Sequence[str] = "sparsity,hdbscan", *, variant: str = REFERENCE_VARIANT,
                      seed: int = 0, activation: str | Mapping[str, str] | None = None, device: str = "cpu",
                      model: str = "activations", dataset: str = "given samples") -> Results:
    """Run the registered ``probes`` on ``activations`` and return the :class:`Results` a study returns.

    ``activations`` is one run's ``{layer: tensor | ndarray}`` (tagged ``variant`` and ``seed``), or a
    list of :class:`ActivationRun`; ``labels`` holds each sample's class.  ``activation`` says which
    activation function the layers are the outputs of (``"relu"``, ``"gelu"``; one for all, or per
    layer), as capture would have found it; sparsity's zero test depends on it (None: not an
    activation, the exact zero test).  ``model`` and ``dataset`` name the source in the report's title.
    ``bnprobe.render``, ``write_outputs``, ``to_frame`` and ``plot`` then work on the result as on a
    study's.
    """
    runs = [ActivationRun(activations, variant, seed)] if isinstance(activations, Mapping) else list(activations)
    if not runs or not all(isinstance(run, ActivationRun) for run in runs):
        raise BnprobeError("give the activations as {layer: tensor}, or a list of bnprobe.ActivationRun(activations, "
                           "variant, seed), one per run")
    tags = [(run.variant, run.seed) for run in runs]
    if len(set(tags)) != len(tags):
        raise BnprobeError("two runs have the same variant and seed; tag each run with its own")
    label_array = _labels(labels)
    probe_list = build_probes(probes)
    needing_model = [probe.key for probe in probe_list if probe.needs == "model"]
    if needing_model:
        raise BnprobeError(f"probe {needing_model[0]} runs the model, and activations alone have none; probe the "
                           "model with bnprobe.capture and run_probes, or leave that probe out")
    run_device = resolve_device(device)
    def activation_of(name: str) -> str | None:
        return activation.get(name) if isinstance(activation, Mapping) else activation

    captures = {(run.variant, run.seed): _captured(run, label_array, probe_list, run_device, activation_of)
                for run in runs}
    results = Results(model=model, dataset=dataset,
                      config={"probes": [probe.key for probe in probe_list], "variants": list(dict.fromkeys(
                          v for v, _ in tags)), "samples_probed": len(label_array), "source": GIVEN_ACTIVATIONS})
    for run in sorted(runs, key=lambda r: (r.seed, r.variant != REFERENCE_VARIANT)):
        captured = captures[(run.variant, run.seed)]
        reference = captures.get((REFERENCE_VARIANT, run.seed))
        context = ProbeContext(model=None, inputs=None, labels=torch.from_numpy(label_array), device=run_device,
                               variant=run.variant, seed=run.seed,
                               reference=reference_lookup(reference), reference_layers=reference_layers(reference))
        outcome = start_probes(captured, probe_list, context, on_failure="warn").result()
        results.runs.append(RunResult(
            variant=run.variant, seed=run.seed, train_accuracy=None, test_accuracy=None, final_loss=None,
            probes={key: layers for key, layers in outcome.values.items() if layers}, notes=outcome.notes,
            failures=[failure.to_dict() for failure in outcome.failures]))
        results.layers = results.layers or captured.names
    results.runs.sort(key=lambda r: tags.index((r.variant, r.seed)))
    return results


def _labels(labels: Any) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise BnprobeError(f"labels must be one integer class per sample, got shape {array.shape} of {array.dtype}")
    return array.astype(np.int64)


def _captured(run: ActivationRun, labels: np.ndarray, probes: Sequence[Probe], device: torch.device,
              activation_of: Callable[[str], str | None]) -> CaptureResult:
    """``run``'s activations as a capture would hand them over: one :class:`LayerData` per layer."""
    if not run.activations:
        raise BnprobeError(f"{run.variant} seed {run.seed}: no layers given")
    label_tensor = torch.from_numpy(labels).to(device)
    layers = []
    for name, values in run.activations.items():
        tensor = torch.as_tensor(values).detach().to(device)
        if tensor.ndim < 2 or len(tensor) != len(labels) or not tensor.is_floating_point():
            raise BnprobeError(f"{run.variant} seed {run.seed}, layer {name}: activations must be floating point, "
                               f"(samples, ...) with one row per label ({len(labels)}), got {tuple(tensor.shape)} "
                               f"{tensor.dtype}")
        shape = tuple(tensor.shape[1:])
        accumulators = {probe.key: new_accumulator(probe, name, shape, activation_of(name)) for probe in probes
                        if probe.needs == "stream"}
        for start in range(0, len(tensor), BATCH):
            for accumulator in accumulators.values():
                accumulator.update(tensor[start:start + BATCH].float(), label_tensor[start:start + BATCH])
        vectors = tensor.reshape(len(tensor), -1).float()
        layers.append(LayerData(name=name, shape=shape, labels=labels, accumulators=accumulators,
                                load_vectors=lambda v=vectors: v.cpu().numpy(),
                                load_tensor=lambda target, v=vectors: v.to(target), activation=activation_of(name)))
    return CaptureResult(layers, labels, device=device, variant=run.variant, seed=run.seed)
