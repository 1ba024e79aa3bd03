"""Checks that need a CUDA GPU; skipped elsewhere.  `bench/gpu_checks.sh` runs them on a GPU machine."""

import numpy as np
import pytest
import torch

import bnprobe
from bnprobe.probes import build_probes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_device_is_cuda_and_training_uses_bf16_channels_last():
    assert bnprobe.train.resolve_device("auto").type == "cuda"
    data = bnprobe.load_dataset("digits")
    model = bnprobe.create_model("resnet18", num_classes=10, in_chans=1)
    result = bnprobe.train_model(model, data.train, data.test, config=bnprobe.TrainConfig(epochs=5), device="auto")
    assert next(model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.test_accuracy > 0.3


def test_capture_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = bnprobe.create_model("cnn4", num_classes=10, in_chans=1).eval()
    x, y = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    probes = build_probes("sparsity")
    on_cpu = bnprobe.capture(model, (x, y), probes=probes, vectors=True)
    on_gpu = bnprobe.capture(model, (x, y), probes=probes, vectors=True, device="cuda")
    assert next(model.parameters()).device.type == "cpu"  # moved back
    for name in on_cpu.names:
        # cuDNN convolutions run in TF32 by default (10-bit mantissa): ~4e-4 absolute differences were
        # measured on an H100 for activations of order 0.1-1, so compare at that precision.
        np.testing.assert_allclose(on_gpu[name].vectors(), on_cpu[name].vectors(), rtol=1e-2, atol=2e-3)
        a = on_cpu[name].accumulators["sparsity"].result()["channel_sparsity"]
        b = on_gpu[name].accumulators["sparsity"].result()["channel_sparsity"]
        assert abs(a - b) < 0.01


def test_whole_study_on_cuda(tmp_path):
    config = bnprobe.StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=500,
                                 probes=["sparsity", "hdbscan"], device="cuda",
                                 train=bnprobe.TrainConfig(epochs=5))
    results = bnprobe.run_study(config, out=tmp_path)
    assert [r.variant for r in results.runs] == ["bn", "identity"]
    assert all(r.test_accuracy > 0.15 for r in results.runs)  # chance is 0.1
    assert results.runs[0].probes["hdbscan"]["features.12"]["n_clusters"] >= 0
