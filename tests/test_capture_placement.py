"""Where capture keeps the vectors (device / memory / disk), and reading them as tensors; CPU only."""

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from bnprobe.capture import capture, check_max_device_memory, plan_placement
from bnprobe.capture._vector_store import VectorStore
from bnprobe.errors import BnprobeError
from bnprobe.probes.base import LayerData

GB = 10**9


def _no_lookup(_device):
    raise AssertionError("free device memory looked up")


@pytest.mark.parametrize("budget", ["auto", None, 0, 10 * GB])
def test_a_cpu_run_device_never_keeps_vectors_on_the_device(budget):
    assert plan_placement(GB, "cpu", None, budget, free_memory=_no_lookup) == "memory"
    assert plan_placement(GB, torch.device("cpu"), GB - 1, budget, free_memory=_no_lookup) == "disk"


@pytest.mark.parametrize(("total", "budget", "max_memory", "expected"), [
    (GB, 2 * GB, 0, "device"),          # fits the device budget: the host budget does not matter
    (GB, GB, 0, "device"),              # the budget is inclusive
    (GB, GB - 1, 2 * GB, "memory"),     # over the device budget, within max_memory
    (GB, GB - 1, None, "memory"),
    (GB, GB - 1, GB - 1, "disk"),
    (100 * GB, None, 0, "device"),      # None: no device limit
    (1, 0, 0, "disk"),                  # 0: never on the device, however small
    (1, 0, None, "memory"),
])
def test_placement_on_cuda_with_a_byte_budget(total, budget, max_memory, expected):
    assert plan_placement(total, "cuda", max_memory, budget, free_memory=_no_lookup) == expected
    assert plan_placement(total, torch.device("cuda", 1), max_memory, budget, free_memory=_no_lookup) == expected


def test_auto_budget_is_half_the_free_device_memory():
    asked = []

    def free(device):
        asked.append(device)
        return 10 * GB

    assert plan_placement(5 * GB, "cuda:0", 0, "auto", free_memory=free) == "device"
    assert plan_placement(5 * GB + 1, "cuda:0", None, "auto", free_memory=free) == "memory"
    assert plan_placement(5 * GB + 1, "cuda:0", 0, free_memory=free) == "disk"  # "auto" is the default
    assert asked == [torch.device("cuda", 0)] * 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "lots", "AUTO", [1]])
def test_bad_device_budgets_are_rejected(bad):
    with pytest.raises(BnprobeError, match="max_device_memory must be"):
        check_max_device_memory(bad)
    with pytest.raises(BnprobeError, match="max_device_memory must be"):
        plan_placement(1, "cpu", None, bad)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with pytest.raises(BnprobeError, match="max_device_memory must be"):
        capture(model, (torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), max_device_memory=bad)


@pytest.mark.parametrize("good", ["auto", None, 0, 2**40, np.int64(5)])
def test_good_device_budgets_pass(good):
    assert check_max_device_memory(good) == good


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(("max_memory", "placement"), [(None, "memory"), (1, "disk")])
def test_vectors_tensor_matches_vectors(tmp_path, dtype, max_memory, placement):
    data = (torch.randn(7, 1, 8, 8), torch.arange(7) % 2)
    result = capture(_model(), data, batch_size=3, dtype=dtype, max_memory=max_memory, cache_dir=tmp_path,
                     max_device_memory=None)  # no limit, yet a CPU run never keeps vectors "on the device"
    assert result.placement == placement
    assert (result.cache_dir is not None) == (placement == "disk")
    for layer in result.layers:
        tensor = layer.vectors_tensor("cpu")
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
        np.testing.assert_array_equal(tensor.numpy(), layer.vectors())


def test_a_memory_mapped_layer_is_copied_not_shared(tmp_path):
    result = capture(_model(), (torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)), max_memory=1,
                     cache_dir=tmp_path)
    layer = result.layers[0]
    tensor = layer.vectors_tensor(torch.device("cpu"))
    tensor += 1  # must not write through the read-only memory map
    np.testing.assert_array_equal(layer.vectors() + 1, tensor.numpy())


def test_no_vectors_no_placement():
    result = capture(_model(), (torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)), vectors=False)
    assert result.placement is None
    with pytest.raises(BnprobeError, match="no vectors were captured"):
        result.layers[0].vectors_tensor("cpu")


def test_layer_data_without_a_tensor_loader_falls_back_to_vectors():
    vectors = np.arange(6, dtype=np.float16).reshape(3, 2)
    layer = LayerData("l", (2,), np.zeros(3), load_vectors=lambda: vectors)
    tensor = layer.vectors_tensor("cpu")
    assert tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), vectors.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tensor_store_fills_in_order_and_reads_back(dtype):
    # the device store's logic, exercised on the CPU device (capture uses it on CUDA only)
    store = VectorStore(5, 3, dtype, device="cpu")
    assert store.array is None and store.tensor.dtype == getattr(torch, dtype) and store.device.type == "cpu"
    rows = torch.arange(15, dtype=torch.float32).reshape(5, 3) / 4
    store.write(rows[:2])
    store.write(rows[2:4].double())
    assert store.filled == 4 and store.nbytes == 4 * 3 * np.dtype(dtype).itemsize
    loaded = store.load()
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, rows[:4].numpy())
    tensor = store.load_tensor("cpu")
    assert tensor.dtype == torch.float32
    np.testing.assert_array_equal(tensor.numpy(), rows[:4].numpy())
    store.write(rows[4:] + 0)
    store.write(rows)  # beyond the expected rows: ignored
    assert store.filled == 5
    np.testing.assert_array_equal(store.load(), rows.numpy())


def test_a_store_is_on_a_device_or_in_a_file(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        VectorStore(1, 1, "float32", tmp_path / "x.npy", device="cpu")


def test_capture_fills_tensor_stores_when_the_plan_says_device(monkeypatch):
    # what a CUDA run does, on the CPU device: the plan is forced, the stores are torch tensors
    capture_module = importlib.import_module("bnprobe.capture._capture")  # the attribute is the function

    data = (torch.randn(7, 1, 8, 8), torch.arange(7) % 2)
    in_memory = capture(_model(), data, batch_size=3, dtype="float16")
    monkeypatch.setattr(capture_module, "plan_placement", lambda *args, **kwargs: "device")
    on_device = capture(_model(), data, batch_size=3, dtype="float16")
    assert on_device.placement == "device" and on_device.cache_dir is None
    for name in in_memory.names:
        np.testing.assert_array_equal(on_device[name].vectors(), in_memory[name].vectors())
        np.testing.assert_array_equal(on_device[name].vectors_tensor("cpu").numpy(), in_memory[name].vectors())


def test_a_study_checks_its_device_budget_before_training():
    from bnprobe.study import StudyConfig

    assert StudyConfig(model="cnn4", max_device_memory=0).max_device_memory == 0
    with pytest.raises(BnprobeError, match="max_device_memory must be"):
        StudyConfig(model="cnn4", max_device_memory="half")
