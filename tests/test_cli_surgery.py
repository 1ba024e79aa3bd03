import pytest
import torch
from click.testing import CliRunner

from bnprobe.cli import cli
from bnprobe.models import create_model


def _run(*args):
    return CliRunner().invoke(cli, ["surgery", *args], env={"COLUMNS": "220"})


def test_plan_for_a_timm_norm_act_model():
    result = _run("efficientnet_b0", "--to", "groupnorm")
    assert result.exit_code == 0, result.output
    assert "BatchNormAct2d" in result.output and "NormAct" in result.output and "SiLU" in result.output
    assert "total: 49 layers" in result.output


def test_plan_totals_match_parameter_counts():
    model = create_model("resnet18", num_classes=10, in_chans=1)
    before = sum(p.numel() for p in model.parameters())
    result = _run("resnet18", "--to", "identity")
    assert result.exit_code == 0
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                    for p in m.parameters())
    assert f"parameters {-bn_params:+,}" in result.output
    assert before - bn_params > 0


def test_checkpoint_is_loaded_before_fold(tmp_path):
    model = create_model("resnet18", num_classes=10, in_chans=1)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    assert _run("resnet18", "--to", "fold", "--checkpoint", str(path)).exit_code == 0
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3)}}, path)
    bad = _run("resnet18", "--to", "fold", "--checkpoint", str(path))
    assert bad.exit_code == 2 and "conv1.weight" in bad.output and len(bad.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["resnet18", "--to", "batchrenorm"], "identity, groupnorm"),
    (["resnet18", "--to", "groupnorm:7"], "channels"),
])
def test_bad_targets(args, message):
    result = _run(*args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
