"""Published weights: found in the local caches or a file, adapted to the dataset, never downloaded.

Every weights file here is written by the test itself (timm's tiny ``test_resnet``, torchvision's
``shufflenet_v2_x0_5``), into a file or into a Hugging Face / torch hub cache laid out as the hub
libraries lay it out."""

import json

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
from click.testing import CliRunner

from bnprobe.cli import cli
from bnprobe.errors import BnprobeError
from bnprobe.models import create_model

TIMM_NAME = "test_resnet.r160_in1k"


@pytest.fixture(scope="module")
def published():
    """``test_resnet`` as published (1000 classes, 3 channels), with random weights of its own."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=1000).state_dict()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache that this test's hub reads use."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _put_in_hub_cache(cache, repo_id, files):
    """Write ``files`` ({name: writer(path)}) as the main revision of ``repo_id`` in the hub cache."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    for name, write in files.items():
        write(snapshot / name)


def test_a_weights_file_loads_every_tensor_and_adapts_the_stem_and_the_classifier(tmp_path, published):
    path = tmp_path / "w.pt"
    torch.save(published, path)
    torch.manual_seed(1)
    model = create_model(TIMM_NAME, num_classes=4, in_chans=1, pretrained=str(path))
    state = model.state_dict()
    body = [k for k in published if not k.startswith(("fc.", "conv1.0."))]
    assert body and all(torch.equal(state[k], published[k]) for k in body)
    # timm sums the RGB filters for one input channel, and keeps a 4-class head of its own
    assert torch.allclose(state["conv1.0.weight"][:, 0], published["conv1.0.weight"].sum(dim=1))
    assert state["fc.weight"].shape == (4, published["fc.weight"].shape[1])


def test_the_published_weights_come_from_the_hub_cache(hub_cache, published):
    _put_in_hub_cache(hub_cache, f"timm/{TIMM_NAME}",
                      {"model.safetensors": lambda p: safetensors.torch.save_file(published, str(p))})
    model = create_model(TIMM_NAME, num_classes=1000, pretrained=True)
    assert all(torch.equal(model.state_dict()[k], published[k]) for k in published)


def test_an_hf_hub_name_reads_its_config_and_weights_from_the_cache(hub_cache, published):
    cfg = timm.models.get_pretrained_cfg(TIMM_NAME).to_dict()
    config = {"architecture": "test_resnet", "num_classes": 1000, "pretrained_cfg": cfg}
    _put_in_hub_cache(hub_cache, f"timm/{TIMM_NAME}", {
        "config.json": lambda p: p.write_text(json.dumps(config)),
        "model.safetensors": lambda p: safetensors.torch.save_file(published, str(p))})
    model = create_model(f"hf-hub:timm/{TIMM_NAME}", num_classes=3, pretrained=True)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], published["layer1.0.conv1.weight"])
    assert model.get_classifier().out_features == 3


def test_without_cached_weights_it_fails_in_one_line_saying_where_it_looked(hub_cache):
    with pytest.raises(BnprobeError, match=r"no pretrained weights for test_resnet.r160_in1k on this machine "
                                           r"\(looked in .*hf-hub/models--timm--test_resnet.r160_in1k\)"):
        create_model(TIMM_NAME, num_classes=4, pretrained=True)
    result = CliRunner().invoke(cli, ["run", TIMM_NAME, "--pretrained", "--dataset", "tiny-study", "--device", "cpu",
                                      "--out", str(hub_cache.parent / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "looked in" in result.output and "--pretrained FILE" in result.output
    assert not (hub_cache.parent / "out").exists()


def test_a_file_that_does_not_fit_names_its_first_mismatching_key(tmp_path, published):
    missing = {k: v for k, v in published.items() if k != "layer1.0.conv1.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(BnprobeError, match="key layer1.0.conv1.weight is missing from them"):
        create_model(TIMM_NAME, num_classes=4, pretrained=str(tmp_path / "missing.pt"))  # timm loads non-strictly here
    torch.save({**published, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(BnprobeError, match="they have key extra.weight, which the model does not"):
        create_model(TIMM_NAME, num_classes=4, pretrained=str(tmp_path / "extra.pt"))
    with pytest.raises(BnprobeError, match="not found"):
        create_model(TIMM_NAME, num_classes=4, pretrained=str(tmp_path / "absent.pt"))


def test_torchvision_weights_come_from_torch_hubs_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(BnprobeError, match=r"looked for .*hub/checkpoints/shufflenetv2_x0.5-"):
        create_model("tv:shufflenet_v2_x0_5", num_classes=4, pretrained=True)
    url = torchvision.models.get_model_weights("shufflenet_v2_x0_5").DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    published = torchvision.models.shufflenet_v2_x0_5().state_dict()
    torch.save(published, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    model = create_model("tv:shufflenet_v2_x0_5", num_classes=4, pretrained=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], published[k]) for k in published if not k.startswith("fc."))
    assert state["fc.weight"].shape == (4, published["fc.weight"].shape[1])


def test_bnprobes_own_models_have_no_published_weights():
    with pytest.raises(BnprobeError, match="no published weights; load weights trained for this dataset with "
                                           "init_weights='FILE' instead of pretrained"):
        create_model("cnn4", num_classes=4, pretrained=True)


@pytest.mark.parametrize("model", [TIMM_NAME, "tv:shufflenet_v2_x0_5"])
def test_a_file_that_is_no_checkpoint_fails_in_one_line_saying_what_it_is(tmp_path, model):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(BnprobeError) as raised:
        create_model(model, num_classes=4, pretrained=str(path))
    message = str(raised.value)
    assert message.startswith(f"pretrained weights file {path} is not a torch checkpoint of weights: it is text")
    assert "pretrained='FILE' takes a state_dict saved with torch.save(model.state_dict(), FILE)" in message
    assert "(101)" not in message and "\n" not in message
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", model, "--pretrained", str(path), "--dataset", "tiny-study",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "is not a torch checkpoint of weights" in result.output and "--pretrained FILE takes" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_whole_pickled_model_or_an_unsuffixed_safetensors_file_is_named_as_such(tmp_path, published):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(BnprobeError, match=r"it is a torch.save file of objects other than tensors \(a whole model"):
        create_model(TIMM_NAME, num_classes=4, pretrained=str(tmp_path / "model.pt"))
    safetensors.torch.save_file(published, str(tmp_path / "weights.bin"))
    with pytest.raises(BnprobeError, match="it is a safetensors file not named .*: rename it to end in .safetensors"):
        create_model(TIMM_NAME, num_classes=4, pretrained=str(tmp_path / "weights.bin"))
