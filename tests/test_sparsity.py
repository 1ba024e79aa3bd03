import math

import numpy as np
import pytest
import torch

from bnprobe.errors import BnprobeError
from bnprobe.probes import get_probe
from bnprobe.probes.sparsity import SparsityProbe


def _measure(acts, labels, batches=1, **params):
    probe = SparsityProbe(**params)
    acc = probe.accumulator("l", tuple(acts.shape[1:]))
    for chunk, lab in zip(acts.chunk(batches), labels.chunk(batches), strict=True):
        acc.update(chunk, lab)
    return acc.result()


def test_sparsity_by_hand():
    # 2 samples, 2 channels, 2 positions.
    acts = torch.tensor([[[0.0, 1.0], [0.0, 0.0]],
                         [[2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([0, 1])
    r = _measure(acts, labels)
    # channel 0: 2 zeros of 4; channel 1: 4 of 4 -> mean 0.75
    assert r["channel_sparsity"] == pytest.approx(0.75)
    # each sample has 3 zeros of 4
    assert r["sample_sparsity"] == pytest.approx(0.75)
    # channel 1 is dead
    assert r["dead_channel_fraction"] == pytest.approx(0.5)
    # one non-zero per sample: Hoyer 1
    assert r["hoyer"] == pytest.approx(1.0)
    assert r["class_sparsity_0"] == pytest.approx(0.75)
    assert r["class_sparsity_spread"] == pytest.approx(0.0)
    assert r["channel_sparsity_q50"] == pytest.approx(0.75)


def test_streaming_equals_one_batch_and_hoyer_formula():
    g = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(12, 3, 4, 4, generator=g))
    labels = torch.arange(12) % 3
    whole, streamed = _measure(acts, labels), _measure(acts, labels, batches=4)
    for key in whole:
        assert streamed[key] == pytest.approx(whole[key], abs=1e-6)
    flat = acts.reshape(12, -1).double()
    n = flat.shape[1]
    hoyer = ((math.sqrt(n) - flat.abs().sum(1) / flat.norm(dim=1)) / (math.sqrt(n) - 1)).mean()
    assert whole["hoyer"] == pytest.approx(float(hoyer), rel=1e-5)
    zeros = (acts == 0).numpy()
    per_class = [zeros[labels.numpy() == c].mean() for c in range(3)]
    assert whole["class_sparsity_2"] == pytest.approx(per_class[2])
    assert whole["class_sparsity_spread"] == pytest.approx(max(per_class) - min(per_class))
    per_channel = zeros.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    assert whole["channel_sparsity_q90"] == pytest.approx(np.quantile(per_channel, 0.9))


def test_eps_counts_near_zero_values():
    acts = torch.tensor([[0.005, -0.002, 0.5, 1.0]])
    labels = torch.tensor([0])
    assert _measure(acts, labels)["channel_sparsity"] == pytest.approx(0.0)
    assert _measure(acts, labels, eps=0.01)["channel_sparsity"] == pytest.approx(0.5)


def test_bad_eps_is_one_line_error():
    with pytest.raises(BnprobeError, match="eps must be >= 0"):
        get_probe("sparsity", eps=-1)
    with pytest.raises(BnprobeError, match="unknown parameter"):
        get_probe("sparsity", threshold=1)
