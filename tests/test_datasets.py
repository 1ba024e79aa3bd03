"""The on-disk datasets, each read from tiny files written here in its original format."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from bnprobe.data import load_dataset
from bnprobe.data._readers import idx
from bnprobe.errors import BnprobeError

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_arrays(n_train=12, n_test=4):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28))
    test = rng.integers(0, 256, (n_test, 28, 28))
    return train, np.arange(n_train) % 10, test, np.arange(n_test) % 10


def _write_idx(folder, gz=True, arrays=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, array) in enumerate(zip(IDX_NAMES, arrays or _mnist_arrays(), strict=True)):
        zipped = gz if isinstance(gz, bool) else gz[i]
        data = _idx_bytes(np.asarray(array))
        if zipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def _pixels(split, dataset):
    """Undo the normalisation: pixel values in [0, 1] again."""
    mean = torch.tensor(dataset.info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(dataset.info["std"]).view(1, -1, 1, 1)
    return split.x * std + mean


@pytest.mark.parametrize("gz", [True, False, (True, False, False, True)])
def test_mnist_from_idx_files_gzipped_or_not(tmp_path, gz):
    train, train_y, test, test_y = _mnist_arrays()
    _write_idx(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_root=tmp_path)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (12, 4, 10)
    assert tuple(ds.train.x.shape[1:]) == (1, 28, 28)
    assert torch.equal(ds.train.y, torch.tensor(train_y)) and torch.equal(ds.test.y, torch.tensor(test_y))
    assert torch.allclose(_pixels(ds.test, ds)[:, 0], torch.tensor(test / 255, dtype=torch.float32), atol=1e-5)
    assert abs(float(ds.train.x.mean())) < 1e-5  # standardised with the training statistics
    assert ds.augment.pad == 3 and not ds.augment.flip  # a mirrored digit is no digit


def test_fashion_mnist_flips_and_reads_torchvision_layout(tmp_path):
    _write_idx(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion-mnist", data_root=tmp_path, image_size=32)
    assert tuple(ds.train.x.shape[1:]) == (1, 32, 32) and ds.augment.flip and ds.augment.pad == 4


def test_fashion_mnist_found_where_debian_puts_it(tmp_path, monkeypatch):
    _write_idx(tmp_path / "fashion-mnist")
    monkeypatch.setattr(idx, "DEBIAN_ROOT", tmp_path)
    ds = load_dataset("fashion-mnist")
    assert len(ds.train) == 12 and ds.info["source"] == str(tmp_path / "fashion-mnist")


def test_missing_files_are_downloaded_with_torchvision(tmp_path, monkeypatch):
    def fake_download(self):  # what torchvision leaves behind: raw idx files under ROOT/MNIST/raw
        _write_idx(tmp_path / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    ds = load_dataset("mnist", data_root=tmp_path)
    assert len(ds.train) == 12


def test_failed_download_is_one_line_naming_files_and_option(tmp_path, monkeypatch):
    def no_network(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\n<urlopen error offline>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_network)
    with pytest.raises(BnprobeError) as err:
        load_dataset("mnist", data_root=tmp_path / "empty")
    message = str(err.value)
    assert "\n" not in message and "<urlopen error offline>" in message
    assert "train-images-idx3-ubyte" in message and "data_root='FOLDER'" in message  # from Python: the keyword


def _half_mnist_download(self):
    """What torchvision leaves when the network goes away after the first file: ROOT/MNIST/raw with one."""
    raw = Path(self.root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b half a file")
    raise RuntimeError("Error downloading train-labels-idx1-ubyte.gz:\n<urlopen error offline>")


def test_a_failed_download_removes_the_folders_it_created(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _half_mnist_download)
    with pytest.raises(BnprobeError, match="downloading them to .* failed"):
        load_dataset("mnist", data_root=tmp_path / "new" / "data")
    assert list(tmp_path.iterdir()) == []  # new/ and new/data/ were made for the download: gone
    with pytest.raises(BnprobeError, match="failed"):  # a second try meets no half dataset either
        load_dataset("mnist", data_root=tmp_path / "new" / "data")


def test_a_failed_download_into_an_existing_folder_keeps_what_was_there(tmp_path, monkeypatch):
    (tmp_path / "mine.txt").write_text("mine")
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "MNIST" / "notes.txt").write_text("mine")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _half_mnist_download)
    with pytest.raises(BnprobeError, match="failed"):
        load_dataset("mnist", data_root=tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["MNIST", "MNIST/notes.txt",
                                                                                 "mine.txt"]


def test_an_interrupted_cifar_download_takes_back_its_archive(tmp_path, monkeypatch):
    (tmp_path / "mine.txt").write_text("mine")

    def interrupted(self):
        (Path(self.root) / "cifar-10-python.tar.gz").write_bytes(b"the first megabyte")
        raise KeyboardInterrupt

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):  # still an interruption, not a data error
        load_dataset("cifar10", data_root=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_partial_and_broken_idx_files(tmp_path):
    _write_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BnprobeError, match="has train-images-idx3-ubyte but not t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0c\x01junk")
    with pytest.raises(BnprobeError, match="not an idx file"):
        load_dataset("mnist", data_root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    train, _, test, test_y = _mnist_arrays()
    _write_idx(tmp_path, arrays=(train, np.full(12, 11), test, test_y))
    with pytest.raises(BnprobeError, match="train labels run from 11 to 11, outside 0..9"):
        load_dataset("mnist", data_root=tmp_path)


def _write_cifar(folder, batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (batch, 3072)).astype(np.uint8)
        batches[name] = data
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": [int(v) for v in rng.integers(0, 10, batch)],
                         "batch_label": name}, handle)
    return batches


def test_cifar10_from_python_batches(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", data_root=tmp_path)
    assert (len(ds.train), len(ds.test)) == (20, 4) and tuple(ds.train.x.shape[1:]) == (3, 32, 32)
    # each row is the red plane, then green, then blue, each 32x32 row-major
    expected = torch.tensor(batches["test_batch"][1].reshape(3, 32, 32) / 255, dtype=torch.float32)
    assert torch.allclose(_pixels(ds.test, ds)[1], expected, atol=1e-5)
    assert ds.augment.pad == 4 and ds.augment.flip and ds.info["classes"][0] == "airplane"


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "data_batch_3", "wb") as handle:
        pickle.dump({"data": Evil(), "labels": []}, handle)
    with pytest.raises(BnprobeError, match=r"data_batch_3 .*builtins.print is not allowed"):
        load_dataset("cifar10", data_root=tmp_path)


def _write_png_folder(root, split, classes, per_class=2, size=(12, 10), mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(len(split))
    for name in classes:
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(root / split / name / f"{i}.png")


def test_image_folder_with_val_split(tmp_path):
    _write_png_folder(tmp_path, "train", ["cat", "dog", "eel"])
    _write_png_folder(tmp_path, "val", ["dog"], per_class=3)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.name == f"folder:{tmp_path}" and ds.num_classes == 3
    assert tuple(ds.train.x.shape) == (6, 3, 10, 10)  # shorter side 10, centre-cropped square
    assert ds.train.y.tolist() == [0, 0, 1, 1, 2, 2] and ds.test.y.tolist() == [1, 1, 1]  # dog keeps index 1
    assert ds.info["test_folder"] == "val" and ds.augment.flip


def test_grey_image_folder_resized(tmp_path):
    _write_png_folder(tmp_path, "train", ["a", "b"], mode="L")
    _write_png_folder(tmp_path, "test", ["a", "b"], mode="L")
    ds = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert tuple(ds.train.x.shape) == (4, 1, 16, 16) and ds.augment.pad == 2


def test_image_folder_errors(tmp_path):
    with pytest.raises(BnprobeError, match="expected subfolders train/ and test/ \\(or val/\\)"):
        load_dataset(f"folder:{tmp_path}")
    _write_png_folder(tmp_path, "train", ["a"])
    _write_png_folder(tmp_path, "test", ["a", "zebra"])
    with pytest.raises(BnprobeError, match="test/ has classes that train/ lacks: zebra"):
        load_dataset(f"folder:{tmp_path}")
