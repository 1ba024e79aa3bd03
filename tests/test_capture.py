import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from bnprobe.capture import capture, select_modules
from bnprobe.errors import BnprobeError
from bnprobe.probes.sparsity import SparsityProbe


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
    assert on_disk.cache_dir == tmp_path and any(tmp_path.glob("*.npy"))
    for name in in_memory.names:
        np.testing.assert_allclose(on_disk[name].vectors(), in_memory[name].vectors(), atol=1e-6)


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


def test_dataloader_input_and_sample_cap():
    ds = torch.utils.data.TensorDataset(torch.randn(10, 2), torch.arange(10) % 2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    result = capture(Known(), loader, samples=7)
    assert result["act"].vectors().shape == (7, 3)
    assert len(result.labels) == 7
