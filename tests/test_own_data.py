"""A notebook's own DataLoaders and module, through the whole API."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnprobe
from bnprobe.errors import BnprobeError


def _tensors(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(3, 1, 12, 12, generator=g)[y] + 0.5 * torch.randn(n, 1, 12, 12, generator=g), y


class DictBatches(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"image": torch.zeros(1, 12, 12), "label": 0}


class SmallNet(nn.Module):
    def __init__(self, num_classes=3, in_chans=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def test_loaders_become_a_dataset_in_their_order():
    x, y = _tensors(50, 0)
    tx, ty = _tensors(20, 1)
    data = bnprobe.Dataset.from_loaders(DataLoader(TensorDataset(x, y), batch_size=16),
                                        DataLoader(TensorDataset(tx, ty), batch_size=16), name="mine")
    assert torch.equal(data.train.x, x) and torch.equal(data.train.y, y) and torch.equal(data.test.y, ty)
    assert (data.name, data.num_classes, data.channels, data.image_size) == ("mine", 3, 1, 12)
    assert data.train.y.dtype == torch.long and data.train.x.dtype == torch.float32


def test_a_whole_study_from_loaders_and_a_module_class(tmp_path):
    x, y = _tensors(60, 0)
    tx, ty = _tensors(30, 1)
    data = bnprobe.Dataset.from_loaders(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False),
                                        DataLoader(TensorDataset(tx, ty), batch_size=32))
    config = bnprobe.StudyConfig(model="small-net", variants="bn,identity", samples=40, probes="sparsity",
                                 device="cpu", train={"epochs": 1, "batch_size": 16})
    results = bnprobe.run_study(config, model=SmallNet, dataset=data, out=tmp_path)
    assert results.model == "small-net"  # the name the config gives, not the class's
    assert [r.variant for r in results.runs] == ["bn", "identity"]
    assert set(results.runs[0].probes["sparsity"]) == {"body.2"}
    written = bnprobe.write_outputs(results, tmp_path)
    assert (tmp_path / "results.csv") in written


def test_a_loader_where_a_dataset_belongs_says_how_to_wrap_it():
    x, y = _tensors(20, 0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(BnprobeError, match=r"must be a bnprobe.Dataset, got DataLoader; .*Dataset.from_loaders"):
        bnprobe.run_study(bnprobe.StudyConfig(model="small-net", device="cpu"), model=SmallNet, dataset=loader)


def test_batches_that_are_not_pairs_are_named_in_one_line():
    loader = DataLoader(DictBatches(), batch_size=2)
    message = "a data batch must be \\(inputs, labels\\) tensors, got a dict with keys image, label"
    with pytest.raises(BnprobeError, match=message):
        bnprobe.Dataset.from_loaders(loader, loader)
    with pytest.raises(BnprobeError, match=message):
        bnprobe.train_model(SmallNet(), loader, config=bnprobe.TrainConfig(epochs=1), device="cpu")
    with pytest.raises(BnprobeError, match=message):
        bnprobe.capture(SmallNet(), loader)


def test_a_context_whose_samples_are_not_the_captured_ones_is_refused_and_none_is_needed():
    x, y = _tensors(40, 0)
    model = SmallNet()
    probes = bnprobe.build_probes("sparsity,attribution(samples=8,n_steps=4)")
    captured = bnprobe.capture(model, (x, y), probes=probes)
    context = bnprobe.ProbeContext(model=model, inputs=x[:10], labels=y[:10], device=torch.device("cpu"),
                                   layer_modules=captured.modules)
    with pytest.raises(BnprobeError, match=r"its inputs are not the captured ones \(10 samples, 40 captured\); "
                                           r"its labels .*; leave the context out: run_probes\(captured, probes\)"):
        bnprobe.run_probes(captured, probes, context)
    # A placeholder context, once the way to run probes that never read the inputs, is refused the same way.
    placeholder = bnprobe.ProbeContext(model=model, inputs=torch.zeros(0), labels=torch.zeros(0),
                                       device=torch.device("cpu"))
    with pytest.raises(BnprobeError, match="contradicts the capture"):
        bnprobe.run_probes(captured, probes[:1], placeholder)
    outcome = bnprobe.run_probes(captured, probes)
    assert set(outcome.values["sparsity"]) == set(captured.names) and outcome.values[probes[1].key]["model"]


@pytest.mark.parametrize(("batches", "message"), [
    ([((torch.rand(4, 1, 12, 12) * 255).to(torch.uint8), torch.arange(4))], "torch.uint8 inputs of shape"),
    ([(torch.rand(4, 1, 12, 12), torch.eye(4)[:, :3])], "torch.float32 labels of shape (4, 3) for 4 inputs"),
    ([(torch.rand(4, 1, 12, 12), torch.arange(3))], "labels of shape (3,) for 4 inputs"),
], ids=["uint8-images", "one-hot-labels", "fewer-labels"])
def test_loaders_a_study_cannot_use_are_named(batches, message):
    with pytest.raises(BnprobeError, match=f"the train loader gives .*{message.replace('(', '.').replace(')', '.')}"):
        bnprobe.Dataset.from_loaders(batches, batches)


def test_labels_of_shape_n_by_1_are_class_indices():
    x, y = _tensors(8, 0)
    data = bnprobe.Dataset.from_loaders([(x, y[:, None])], [(x, y[:, None])])
    assert torch.equal(data.train.y, y) and data.num_classes == 3
