"""BatchNorm running statistics: measuring with batch statistics, and recomputing them (precise BN).

A BatchNorm layer normalises by its batch's statistics in train mode and by running averages of
them in eval mode.  The averages are updated with ``momentum`` after every training step, so they
trail the weights: after a short or fast run they can describe activations the model no longer
produces, and the same weights that classify well in train mode guess in eval mode.  Every number
bnprobe reports (eval-mode accuracy, captured activations) goes through the running statistics.

* :func:`batch_statistics` measures a model the other way without changing it: BatchNorm layers
  in train mode, every other module (dropout) in eval mode, and the running statistics put back
  as they were afterwards.
* :func:`cumulative_statistics` recomputes them (precise BN, Wu & Johnson 2021, "Rethinking
  'Batch' in BatchNorm"): the running statistics are reset, ``momentum`` is set to None (an equally
  weighted average over every batch seen), the caller runs forward passes over the training data,
  and ``momentum`` is put back.  Other modules stay in eval mode, so the statistics are those of the
  activations eval mode computes.

Only layers that keep running statistics count (:func:`batchnorm_layers`): a frozen BatchNorm or one
built with ``track_running_stats=False`` computes the same in both modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnprobe._common import preserved_flags


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``model`` that keeps running statistics (eval mode differs from train mode)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


@contextmanager
def _bn_in_train_mode(model: nn.Module) -> Iterator[list[_BatchNorm]]:
    """``model`` in eval mode but its BatchNorm layers in train mode; every module's flag restored afterwards."""
    layers = batchnorm_layers(model)
    with preserved_flags(model, training=False):
        for layer in layers:
            layer.training = True  # not .train(): a norm-act layer's drop and act children stay in eval mode
        yield layers


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block ``model``'s BatchNorm layers normalise by each batch's own statistics; their
    running statistics (and batch counts) are restored afterwards, bit for bit."""
    with _bn_in_train_mode(model) as layers:
        saved = [{name: b.clone() for name, b in layer.named_buffers(recurse=False) if b is not None}
                 for layer in layers]
        try:
            yield
        finally:
            for layer, buffers in zip(layers, saved, strict=True):
                for name, value in buffers.items():
                    getattr(layer, name).copy_(value)


@contextmanager
def cumulative_statistics(model: nn.Module) -> Iterator[int]:
    """Within the block the forward passes of ``model`` recompute its BatchNorm running statistics
    from nothing, each batch weighing alike (precise BN); ``momentum`` and the modules' modes are put
    back afterwards.  Yields the number of layers recomputed (0: nothing to do)."""
    with _bn_in_train_mode(model) as layers:
        momenta = [layer.momentum for layer in layers]
        try:
            for layer in layers:
                layer.reset_running_stats()
                layer.momentum = None
            yield len(layers)
        finally:
            for layer, momentum in zip(layers, momenta, strict=True):
                layer.momentum = momentum
