import gc

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from bnprobe.capture._capture import CaptureWarning, capture, select_modules
from bnprobe.errors import BnprobeError
from bnprobe.probes._sparsity import SparsityProbe


class Known(nn.Module):
    """y = relu(W x) with W fixed, so activations are known by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        self.act = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.act(self.fc(x)))


def test_known_activations():
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [2.0, -1.0]])
    result = capture(Known(), (x, torch.tensor([0, 1, 0])), batch_size=2)
    assert result.names == ["act"]
    expected = np.array([[1, 2, 0], [0, 3, 0], [2, 0, 3]], dtype=np.float32)
    np.testing.assert_array_equal(result["act"].vectors(), expected)
    np.testing.assert_array_equal(result.labels, [0, 1, 0])


def test_resnet18_reused_relu_gives_one_entry_per_call():
    model = torchvision.models.resnet18(num_classes=4)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 4
    result = capture(model, (x, y), batch_size=4)
    names = result.names
    assert names[:3] == ["relu", "layer1.0.relu#0", "layer1.0.relu#1"]
    assert len(names) == 17  # stem + 2 per block x 8 blocks
    assert result["layer1.0.relu#0"].shape == (64, 8, 8)
    # the second call of a block's relu is the block output: check it against a manual forward
    model.eval()
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        block = model.layer1[0](stem)
    np.testing.assert_allclose(result["layer1.0.relu#1"].vectors(), block.reshape(6, -1).numpy(), atol=1e-5)


class InPlaceThenModify(nn.Module):
    """An in-place ReLU whose output is modified in place right after it."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.act(x.clone())
        out.mul_(0).add_(-7.0)  # would corrupt a stored reference
        return out


def test_inplace_activation_is_not_corrupted():
    x = torch.tensor([[1.0, -2.0, 3.0]])
    result = capture(InPlaceThenModify(), (x, torch.tensor([0])), probes=[SparsityProbe()], vectors=True)
    np.testing.assert_array_equal(result["act"].vectors(), [[1.0, 0.0, 3.0]])
    assert result["act"].accumulators["sparsity"].result()["channel_sparsity"] == pytest.approx(1 / 3)


def test_model_state_is_restored_even_on_error():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.act(x)

    model = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        capture(model, (torch.ones(4, 2), torch.zeros(4, dtype=torch.long)), batch_size=2)
    assert model.training
    assert not model.act._forward_hooks


def test_state_restored_after_success():
    model = torchvision.models.resnet18(num_classes=2).train()
    model.fc.weight.requires_grad_(False)
    capture(model, (torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)))
    assert model.training and model.layer1[0].bn1.training
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert all(not m._forward_hooks for m in model.modules())


def test_disk_cache_gives_same_vectors(tmp_path):
    model = torchvision.models.resnet18(num_classes=2)
    data = (torch.randn(10, 3, 32, 32), torch.arange(10) % 2)
    in_memory = capture(model, data, batch_size=4)
    on_disk = capture(model, data, batch_size=4, max_memory=1, cache_dir=tmp_path, dtype="float32")
    assert on_disk.cache_dir == tmp_path and len(list(tmp_path.glob("*.npy"))) == len(on_disk) == 17
    for name in in_memory.names:
        assert isinstance(on_disk[name].load_vectors(), np.memmap)
        np.testing.assert_allclose(on_disk[name].vectors(), in_memory[name].vectors(), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_over_budget_vectors_go_to_a_temporary_memory_mapped_cache(dtype):
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [2.0, -1.0]])
    result = capture(Known(), (x, torch.tensor([0, 1, 0])), batch_size=2, max_memory=8, dtype=dtype)
    folder = result.cache_dir
    stored = result["act"].load_vectors()
    assert isinstance(stored, np.memmap) and stored.dtype == np.dtype(dtype)
    assert [f.name for f in folder.iterdir()] == ["000-act.npy"]
    np.testing.assert_array_equal(result["act"].vectors(), [[1, 2, 0], [0, 3, 0], [2, 0, 3]])
    del result, stored
    gc.collect()
    assert not folder.exists()  # a cache capture made itself goes with the result


@pytest.mark.parametrize(("spatial", "dim"), [("flatten", 64 * 8 * 8), ("channel_mean", 64), ("pool:2", 256)])
def test_spatial_rules(spatial, dim):
    model = torchvision.models.resnet18(num_classes=2)
    result = capture(model, (torch.randn(3, 3, 32, 32), torch.zeros(3, dtype=torch.long)), spatial=spatial,
                     layers="layer1.0.*")
    assert result["layer1.0.relu#0"].vectors().shape == (3, dim)


def test_layer_selection_and_errors():
    model = torchvision.models.resnet18(num_classes=2)
    convs = select_modules(model, "conv")
    assert convs[0][0] == "conv1" and all(isinstance(m, nn.Conv2d) for _, m in convs)
    assert [n for n, _ in select_modules(model, "layer4.1.*")] == ["layer4.1.relu"]
    with pytest.raises(BnprobeError, match="no module matches"):
        capture(model, (torch.randn(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)), layers="nope.*")
    with pytest.raises(BnprobeError, match="spatial rule"):
        capture(model, (torch.randn(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)), spatial="pool:x")
    norms = select_modules(model, "norm,layer1.*")
    assert [n for n, _ in norms] == ["layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1", "layer1.1.bn2"]


def test_dataloader_input_and_sample_cap():
    ds = torch.utils.data.TensorDataset(torch.randn(10, 2), torch.arange(10) % 2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    result = capture(Known(), loader, samples=7)
    assert result["act"].vectors().shape == (7, 3)
    assert len(result.labels) == 7


@pytest.mark.parametrize("max_memory", [None, 1])
def test_dataloader_that_drops_its_last_batch(max_memory):
    ds = torch.utils.data.TensorDataset(torch.randn(10, 2), torch.arange(10) % 2)
    result = capture(Known(), torch.utils.data.DataLoader(ds, batch_size=3, drop_last=True), max_memory=max_memory)
    assert result["act"].vectors().shape == (9, 3) and len(result.labels) == 9


# --------------------------------------------------------------------------------------------------
# Functional activations

class FunctionalBlock(nn.Module):
    """Three functional ReLUs, each spelled differently: F.relu, torch.relu and the Tensor method."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))

    def forward(self, x):
        h = F.relu(self.fc(x))
        h = torch.relu(h - 1)
        return (h - 0.5).relu()


class FunctionalNet(nn.Module):
    """A block of functional ReLUs, a ReLU module, an F.relu in the model's own forward, a sigmoid gate."""

    def __init__(self):
        super().__init__()
        self.block = FunctionalBlock()
        self.act = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = self.act(self.block(x) - 1)
        return self.head(F.relu(1 - h).sigmoid())


class Untraceable(FunctionalNet):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x + 0
        return super().forward(x)


X3 = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 4.0, 0.0]])
FUNCTIONAL_EXPECTED = {
    "block:relu#0": [[1, 2, 3], [0, 4, 0]],          # relu(x)
    "block:relu#1": [[0, 1, 2], [0, 3, 0]],          # relu(h - 1)
    "block:relu#2": [[0, 0.5, 1.5], [0, 2.5, 0]],    # relu(h - 0.5)
    "act": [[0, 0, 0.5], [0, 1.5, 0]],               # relu(block - 1)
    ":relu": [[1, 1, 0.5], [1, 0, 1]],               # relu(1 - act)
}


def test_functional_activations_are_captured_by_hand():
    result = capture(FunctionalNet(), (X3, torch.tensor([0, 1])), batch_size=1)
    assert result.names == list(FUNCTIONAL_EXPECTED)  # forward order; the sigmoid gate is left out
    for name, expected in FUNCTIONAL_EXPECTED.items():
        np.testing.assert_allclose(result[name].vectors(), expected, err_msg=name)
    assert list(result.modules) == ["act"] and result.unseen == [] and result.warnings == []
    assert capture(FunctionalNet(), (X3, torch.tensor([0, 1])), layers="block:*").names[0] == "block:relu#0"
    assert capture(FunctionalNet(), (X3, torch.tensor([0, 1])), layers="norm,conv,act,*relu").names == [
        "block:relu#0", "block:relu#1", "block:relu#2", ":relu"]


@pytest.mark.parametrize("fn", [F.gelu, F.silu, F.elu, lambda x: F.leaky_relu(x, 0.1)])
def test_other_functional_activations(fn):
    class Net(nn.Module):
        def forward(self, x):
            return fn(x) * 2

    x = torch.linspace(-3, 3, 8).reshape(2, 4)
    result = capture(Net(), (x, torch.tensor([0, 1])))
    assert len(result.names) == 1 and result.names[0].startswith(":")
    np.testing.assert_allclose(result.layers[0].vectors(), fn(x).numpy(), rtol=1e-6)


def test_functional_inplace_activation_is_not_corrupted():
    class InPlace(nn.Module):
        def forward(self, x):
            out = F.relu(x.clone(), inplace=True)
            out.mul_(0).add_(-7.0)  # would corrupt a stored reference
            return out.relu_() + 1

    result = capture(InPlace(), (torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([0])), probes=[SparsityProbe()],
                     vectors=True)
    assert result.names == [":relu#0", ":relu#1"]
    np.testing.assert_array_equal(result[":relu#0"].vectors(), [[1.0, 0.0, 3.0]])
    np.testing.assert_array_equal(result[":relu#1"].vectors(), [[0.0, 0.0, 0.0]])
    assert result[":relu#0"].accumulators["sparsity"].result()["channel_sparsity"] == pytest.approx(1 / 3)


def test_untraceable_model_falls_back_to_module_hooks_and_says_what_it_missed():
    with pytest.warns(CaptureWarning, match=r"model does not trace with torch.fx \(TraceError.*\); functional "
                                            r"activations are not captured: block:relu#0, .*, :relu$"):
        result = capture(Untraceable(), (X3, torch.tensor([0, 1])))
    assert result.names == ["act"]
    np.testing.assert_allclose(result["act"].vectors(), FUNCTIONAL_EXPECTED["act"])
    assert result.unseen == ["block:relu#0", "block:relu#1", "block:relu#2", ":relu"]
    assert len(result.warnings) == 1


def test_trace_that_disagrees_with_the_model_is_not_used():
    class Counting(nn.Module):
        """Its output depends on Python state, which torch.fx bakes into the trace as a constant."""

        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.act(F.relu(x) * self.calls)

    with pytest.warns(CaptureWarning, match="gives other outputs; functional activations are not captured: :relu$"):
        result = capture(Counting(), (X3, torch.tensor([0, 1])))
    assert result.names == ["act"] and result.unseen == [":relu"]
    with pytest.raises(BnprobeError, match="selects only functional activations, and the torch.fx trace"), \
            pytest.warns(CaptureWarning):
        capture(Counting(), (X3, torch.tensor([0, 1])), layers=":*")


def test_error_in_a_traced_forward_leaves_the_model_as_it_was():
    class FailsOnBatches(nn.Module):
        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("boom")
            return x

    class Net(FunctionalNet):
        def __init__(self):
            super().__init__()
            self.fails = FailsOnBatches()

        def forward(self, x):
            return super().forward(self.fails(x))

    model = Net().train()
    with pytest.raises(RuntimeError, match="boom"):
        capture(model, (X3, torch.tensor([0, 1])), batch_size=2)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
