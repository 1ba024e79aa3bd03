"""Checks that need a CUDA GPU; skipped elsewhere.  `bench/gpu_checks.sh` runs them on a GPU machine."""

import gc

import numpy as np
import pytest
import torch

import bnprobe
from bnprobe.probes import build_probes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_device_is_cuda_and_training_uses_bf16_channels_last():
    device = bnprobe.train.resolve_device("auto")
    assert device.type == "cuda"
    assert bnprobe.train._loop.autocast_dtype("auto", device) is torch.bfloat16  # H100/H200: bf16 autocast
    data = bnprobe.load_dataset("digits")
    model = bnprobe.create_model("resnet18", num_classes=10, in_chans=1)
    result = bnprobe.train_model(model, data.train, data.test, config=bnprobe.TrainConfig(epochs=5), device="auto")
    assert next(model.parameters()).device.type == "cuda"
    assert model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.layer1[0].conv1.weight.is_contiguous()
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


def test_capture_on_cuda_keeps_vectors_on_the_device_within_the_budget(tmp_path):
    torch.manual_seed(0)
    model = bnprobe.create_model("cnn4", num_classes=10, in_chans=1).eval()
    x, y = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    on_cpu = bnprobe.capture(model, (x, y), dtype="float16")
    gc.collect()
    before = torch.cuda.memory_allocated()
    on_gpu = bnprobe.capture(model, (x, y), dtype="float16", device="cuda")  # max_device_memory="auto"
    stored = 64 * sum(int(np.prod(layer.shape)) for layer in on_gpu.layers) * 2
    assert on_cpu.placement == "memory" and on_gpu.placement == "device" and on_gpu.cache_dir is None
    assert torch.cuda.memory_allocated() - before >= stored  # held on the device by the result
    assert next(model.parameters()).device.type == "cpu"  # moved back
    to_host = bnprobe.capture(model, (x, y), dtype="float16", device="cuda", max_device_memory=0)
    to_disk = bnprobe.capture(model, (x, y), dtype="float16", device="cuda", max_device_memory=0, max_memory=1,
                              cache_dir=tmp_path)
    too_small = bnprobe.capture(model, (x, y), dtype="float16", device="cuda", max_device_memory=stored - 1)
    assert (to_host.placement, to_disk.placement, too_small.placement) == ("memory", "disk", "memory")
    for name in on_cpu.names:
        tensor = on_gpu[name].vectors_tensor("cuda")
        assert tensor.device.type == "cuda" and tensor.dtype == torch.float32
        on_device = tensor.cpu().numpy()
        np.testing.assert_array_equal(on_gpu[name].vectors(), on_device)
        np.testing.assert_array_equal(on_gpu[name].vectors_tensor("cpu").numpy(), on_device)
        # float16 storage (~1e-3 relative) on top of TF32 convolutions (see the test above)
        np.testing.assert_allclose(on_device, on_cpu[name].vectors(), rtol=1e-2, atol=3e-3)
        for other in (to_host, to_disk, too_small):  # the same device: the same numbers, up to float16's last bit
            np.testing.assert_allclose(other[name].vectors(), on_device, rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(other[name].vectors_tensor("cuda").cpu().numpy(), on_device, rtol=1e-3,
                                       atol=1e-3)


def test_whole_study_on_cuda(tmp_path):
    config = bnprobe.StudyConfig(model="cnn4", variants=["bn", "identity"], seeds=1, samples=500,
                                 probes=["sparsity", "hdbscan"], device="cuda",
                                 train=bnprobe.TrainConfig(epochs=5))
    results = bnprobe.run_study(config, out=tmp_path)
    assert [r.variant for r in results.runs] == ["bn", "identity"]
    assert all(r.test_accuracy > 0.15 for r in results.runs)  # chance is 0.1
    assert results.runs[0].probes["hdbscan"]["features.12"]["n_clusters"] >= 0


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("bf16", 1e-2)])
def test_fused_step_replayed_from_a_cuda_graph_matches_eager(monkeypatch, precision, tolerance):
    """Also in bf16, what ``precision="auto"`` trains in on these cards: graphed, not fallen back."""
    from bnprobe.train import FusedRun, train_fused

    # Deterministic cuDNN kernels in both runs: no atomics adding in another order.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    data = bnprobe.load_dataset("digits")
    config = bnprobe.TrainConfig(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, precision=precision)
    trained = {}
    for graph in (False, True):
        models = []
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            models.append(bnprobe.create_model("cnn4", num_classes=10, in_chans=1))
        summary: list[str] = []
        train_fused([FusedRun(m, s) for s, m in enumerate(models)], data.train, config=config, device="cuda",
                    cuda_graph=graph, on_graph=summary.append)
        trained[graph] = (models, summary)
    assert trained[False][1] == ["eager: CUDA graphs are off"]
    # 1437 samples: 22 full batches and a short one per epoch; of the 44 full ones, 3 warm up.
    assert trained[True][1] == ["CUDA graph, 41 of 46 steps replayed"]
    for eager, graphed in zip(trained[False][0], trained[True][0], strict=True):
        for a, b in zip(eager.state_dict().values(), graphed.state_dict().values(), strict=True):
            # The same kernels in the same order; the tolerance is for what the test cannot pin down
            # (cuBLAS may pick its kernels per stream), scaled to the precision.
            torch.testing.assert_close(a.float(), b.float(), rtol=tolerance, atol=tolerance)
