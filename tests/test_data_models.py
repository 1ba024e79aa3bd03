import pytest
import torch

from bnprobe.data import adapt_channels, list_datasets, load_dataset
from bnprobe.errors import BnprobeError, UnknownNameError
from bnprobe.models import create_model, input_channels, list_models


def test_digits_split_and_shape():
    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert tuple(ds.train.x.shape[1:]) == (1, 32, 32) and ds.num_classes == 10
    # stratified: every class in both splits in the same proportion (+-1 image)
    train_counts = torch.bincount(ds.train.y, minlength=10)
    test_counts = torch.bincount(ds.test.y, minlength=10)
    assert torch.all((train_counts / 4 - test_counts).abs() <= 1.5)
    # normalised with the training statistics
    assert abs(float(ds.train.x.mean())) < 1e-4 and abs(float(ds.train.x.std()) - 1) < 1e-2
    # fixed split: loading twice gives the same data
    again = load_dataset("digits")
    assert torch.equal(again.train.y, ds.train.y) and torch.equal(again.test.x, ds.test.x)


def test_channels_repeat_and_errors():
    ds = adapt_channels(load_dataset("digits"), 3)
    assert ds.channels == 3 and torch.equal(ds.train.x[:, 0], ds.train.x[:, 2])
    with pytest.raises(UnknownNameError, match="available: .*digits"):
        load_dataset("nope")
    assert "digits" in list_datasets()
    with pytest.raises(BnprobeError, match="3 channels"):
        adapt_channels(ds, 1)


def test_model_resolution():
    timm_model = create_model("resnet18", num_classes=10, in_chans=1)
    assert timm_model.conv1.in_channels == 1 and timm_model.fc.out_features == 10
    tv = create_model("tv:resnet18", num_classes=10)
    assert type(tv).__module__.startswith("torchvision") and tv.fc.out_features == 10
    assert input_channels("tv:resnet18", 1) == 3 and input_channels("resnet18", 1) == 1
    assert {"cnn4", "vgg16_cifar"} <= set(list_models())
    cnn = create_model("cnn4", num_classes=10, in_chans=1)
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    vgg = create_model("vgg16_cifar", num_classes=10, in_chans=3)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.modules()) == 13


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownNameError, match="closest names: .*resnet18"):
        create_model("resnet18x", num_classes=10)
    with pytest.raises(UnknownNameError, match="tv:resnet18"):
        create_model("tv:resnt18", num_classes=10)


def test_augment_crop_is_a_shift_within_the_reflected_border():
    from bnprobe.data import Augment

    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), mode="reflect")[0, 0]
    windows = {tuple(padded[i:i + 4, j:j + 4].flatten().tolist()) for i in range(3) for j in range(3)}
    out = Augment(pad=1)(image.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    seen = {tuple(o.flatten().tolist()) for o in out}
    assert seen <= windows and len(seen) == 9  # 64 draws hit all nine offsets 0..2 x 0..2


def test_augment_flip_is_seeded_and_mirrors_about_half():
    from bnprobe.data import Augment

    images = torch.randn(200, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    flip = Augment(pad=0, flip=True)
    out = flip(images, torch.Generator().manual_seed(7))
    mirrored = (out == images.flip(3)).flatten(1).all(1)
    assert torch.all(mirrored | (out == images).flatten(1).all(1))
    assert 70 < int(mirrored.sum()) < 130
    assert torch.equal(out, flip(images, torch.Generator().manual_seed(7)))
    assert Augment.for_size(32, flip=False) == Augment(pad=4, flip=False) and not Augment().active


def test_dataset_to_device_keeps_policy():
    ds = load_dataset("digits")
    moved = ds.to("cpu")
    assert moved.augment == ds.augment and moved.train.x is ds.train.x
