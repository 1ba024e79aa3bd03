"""The examples that show bnprobe inside other tools' workflows run as they are, so they cannot rot."""

import runpy
from pathlib import Path

import pytest

import bnprobe

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["with_plain_hooks.py", "with_captum_layer_activation.py", "with_torchlens.py"])
def test_the_example_runs_and_compares_bn_with_identity(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(EXAMPLES / name), run_name="example")
    results = namespace["main"]()
    assert isinstance(results, bnprobe.Results)
    assert results.variants == ["bn", "identity"]
    assert "sparsity" in results.probe_keys and "cka" in results.probe_keys
    bn_cka = [run.probes["cka"] for run in results.runs if run.variant == "bn"]
    assert all(abs(value["cka"] - 1) < 1e-6 for layers in bn_cka for value in layers.values())
    assert "Δ identity" in capsys.readouterr().out
