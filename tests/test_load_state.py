"""bnprobe.models.load_state: one line, in the caller's words, for weights that do not fit."""

import pytest
import torch
from torch import nn

from bnprobe.data import Split
from bnprobe.errors import BnprobeError
from bnprobe.models import create_model, load_state
from bnprobe.train import TrainConfig, train_model


def _torch_first_line(model: nn.Module, state: dict) -> str:
    """What torch itself says first about ``state`` not fitting ``model``."""
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(state)
    return str(caught.value).splitlines()[0]


def test_weights_that_fit_are_loaded():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    load_state(target, source.state_dict(), "unused: {why}")
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)


def test_a_mismatch_is_the_template_with_torchs_first_line():
    state = nn.Linear(4, 2).state_dict()
    why = _torch_first_line(nn.Linear(3, 2), state)
    with pytest.raises(BnprobeError) as caught:
        load_state(nn.Linear(3, 2), state, "checkpoint /a/{b}.pt does not fit identity: {why}")
    assert str(caught.value) == f"checkpoint /a/{{b}}.pt does not fit identity: {why}"  # braces in a path kept
    assert why.startswith("Error(s) in loading state_dict for Linear")


class _Silent(nn.Linear):
    def load_state_dict(self, state, strict=True, assign=False):
        raise RuntimeError("")


def test_an_empty_torch_message_gives_the_error_type_instead_of_crashing():
    with pytest.raises(BnprobeError) as caught:
        load_state(_Silent(3, 2), {}, "checkpoint x.pt holds another model's weights ({why}); delete it")
    assert str(caught.value) == "checkpoint x.pt holds another model's weights (RuntimeError); delete it"


def test_resuming_another_models_checkpoint_names_torchs_first_mismatch(tmp_path):
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 4
    config, path = TrainConfig(epochs=1, batch_size=16), tmp_path / "run.pt"
    wide = create_model("cnn4", num_classes=4, in_chans=1, width=8)
    train_model(wide, Split(x, y), config=config, device="cpu", checkpoint=path)
    why = _torch_first_line(create_model("cnn4", num_classes=4, in_chans=1, width=4), wide.state_dict())
    with pytest.raises(BnprobeError) as caught:
        train_model(create_model("cnn4", num_classes=4, in_chans=1, width=4), Split(x, y), config=config,
                    device="cpu", checkpoint=path, resume=True)
    assert str(caught.value) == (f"checkpoint {path} holds another model's weights ({why}); "
                                 "delete it, or resume in the folder of the study that wrote it")
