"""A device torch cannot use here is one line listing those it can, from the command line and from Python (issue 31)."""

import pytest
import torch

import bnprobe
from bnprobe.errors import BnprobeError
from bnprobe.models import create_model
from bnprobe.train import resolve_device
from tests._cli import assert_one_line_error, run_cli

UNUSABLE = ["mps", "meta", "xla", "garbage", "cuda:99", *(["cuda"] * (not torch.cuda.is_available()))]


@pytest.mark.parametrize("device", UNUSABLE)
def test_an_unusable_device_lists_the_usable_ones(device):
    absent = r" \(no (CUDA|mps) device is visible\)" if device.startswith(("cuda", "mps")) else ""
    with pytest.raises(BnprobeError, match=rf"device='{device}' cannot be used here{absent}; torch can use: auto, cpu"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_capture_refuses_it_in_the_same_words(device):
    model = create_model("cnn4", num_classes=2, in_chans=1, width=4)
    with pytest.raises(BnprobeError, match=f"device='{device}' cannot be used here"):
        bnprobe.capture(model, (torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])), device=device)


@pytest.mark.parametrize("device", ["mps", "meta", "garbage"])
def test_the_command_line_says_it_in_one_line(tmp_path, device):
    result = run_cli("run", "cnn4", "--device", device, "--out", tmp_path / "study", "--epochs", "1", "--samples", "8")
    assert_one_line_error(result, f"--device {device} cannot be used here")
    assert result.output.rstrip().endswith("; torch can use: auto, cpu")
    assert not (tmp_path / "study" / "results.json").exists()


def test_usable_devices_still_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
