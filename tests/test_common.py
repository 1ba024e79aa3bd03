"""bnprobe._common: the constants and mechanics every stage shares, and the callers that use them."""

import os
import stat
import subprocess
import sys

import pytest
import tomllib
import torch
from torch import nn

import bnprobe.probes.base as base
import bnprobe.report._results as results
import bnprobe.study._run as study
from bnprobe import _common
from bnprobe._common import describe, finite_or_none, first_line, preserved_flags, safe_filename, write_atomic
from bnprobe.capture import capture
from bnprobe.cli.run import default_out
from bnprobe.errors import BnprobeError
from bnprobe.report._files import file_stem
from bnprobe.study import read_study_file
from bnprobe.train import checkpoint_path, run_stem


def test_imports_only_the_standard_library():
    # bnprobe/__init__ imports the whole package: load the module file on its own, as a light caller would
    code = ("import importlib.util, sys; "
            "spec = importlib.util.spec_from_file_location('alone', 'bnprobe/_common.py'); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "print(sorted(m for m in ('torch', 'numpy', 'rich', 'click', 'bnprobe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"


def test_old_names_are_the_shared_ones():
    assert base.REFERENCE_VARIANT is study.REFERENCE_VARIANT is _common.REFERENCE_VARIANT == "bn"
    assert base.MODEL_SCOPE_LAYER is _common.MODEL_SCOPE_LAYER == "model"
    assert results.write_atomic is write_atomic and results.finite_or_none is finite_or_none
    assert list(study.StudyConfig(model="cnn4").variants) == ["bn", "identity", "groupnorm"]


# ---- first line of an error message

def test_first_line_of_an_empty_message_is_the_type_name():
    exc = ValueError()
    with pytest.raises(IndexError):  # the idiom the callers used before
        str(exc).splitlines()[0]
    assert first_line(exc) == "ValueError" and first_line(exc, last=True) == "ValueError"
    assert first_line(RuntimeError("  \n ")) == "RuntimeError"
    assert first_line("") == "" and first_line("\n") == ""


def test_first_line_picks_the_first_or_last_line():
    exc = OSError("\n  mirror 1 failed\nmirror 2 failed\n  no space left  \n")
    assert first_line(exc) == "mirror 1 failed"
    assert first_line(exc, last=True) == "no space left"
    assert first_line("a: b\nc") == "a: b"


def test_describe():
    assert describe(KeyError()) == "KeyError"
    assert describe(TypeError("bad input\nat line 3")) == "TypeError: bad input"
    assert describe(TypeError("bad input\nat line 3"), full=True) == "TypeError: bad input\nat line 3"
    assert describe(ValueError(), full=True) == "ValueError: "


def test_study_file_with_an_empty_parse_error_still_says_why(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('model = "cnn4"\n')

    def fail(text):
        raise ValueError()

    monkeypatch.setattr(tomllib, "loads", fail)
    with pytest.raises(BnprobeError, match=r"^study file .*s\.toml cannot be read: ValueError$"):
        read_study_file(path, ["model"])


# ---- safe file names: each caller's output, pinned

def test_safe_filename():
    assert safe_filename("groupnorm:8") == "groupnorm_8"
    assert safe_filename("identity+bias=1#2") == "identity+bias=1#2"
    assert safe_filename("timm/resnet 18", fill="-") == "timm-resnet-18"
    assert safe_filename("épée") == "_p_e"


@pytest.mark.parametrize(("variant", "stem"), [
    ("bn", "bn-seed3"), ("identity", "identity-seed3"), ("groupnorm:8", "groupnorm_8-seed3"),
    ("identity+bias", "identity+bias-seed3"), ("identity+skipinit", "identity+skipinit-seed3"),
    ("Fold", "Fold-seed3"), (" frozen", "_frozen-seed3"), ("a=b.c-d_e", "a=b.c-d_e-seed3"),
])
def test_checkpoint_and_cache_names_resume_reads(tmp_path, variant, stem):
    assert run_stem(variant, 3) == stem
    assert checkpoint_path(tmp_path, variant, 3) == tmp_path / "checkpoints" / f"{stem}.pt"


@pytest.mark.parametrize(("model", "folder"), [
    ("cnn4", "cnn4"), ("timm/resnet18", "timm-resnet18"), ("tv:resnet18", "tv-resnet18"),
    ("potgieter2025-cifar10-quick", "potgieter2025-cifar10-quick"), ("a b_c.d", "a-b_c.d"),
    ("a+b=c#d", "a+b=c#d"),  # before _common: a-b-c-d
])
def test_default_out_folder(model, folder):
    out = default_out(model)
    assert out.parent.name == "runs" and out.name.startswith(f"{folder}-") and len(out.name) == len(folder) + 16


@pytest.mark.parametrize(("probe", "stem"), [
    ("sparsity", "sparsity"), ("hdbscan(dims=30)", "hdbscan_dims=30"),
    ("attribution(method='IntegratedGradients')", "attribution_method=_IntegratedGradients"),
    ("cka(threshold=1e-3, kind=linear)", "cka_threshold=1e-3__kind=linear"),
    ("x(a=1e+3)", "x_a=1e+3"), ("épée", "p_e"),  # before _common: x_a=1e_3, épée
])
def test_plot_file_stem(probe, stem):
    assert file_stem(probe) == stem


class _Named(nn.Module):
    """Two activations whose module names hold characters a file name must not: '+' and a reused ReLU."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.add_module("a+b", nn.ReLU())
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(getattr(self, "a+b")(self.relu(self.fc(x))))


def test_capture_cache_file_names(tmp_path):
    data = (torch.randn(6, 2), torch.arange(6) % 2)
    result = capture(_Named(), data, batch_size=3, max_memory=1, cache_dir=tmp_path, dtype="float32")
    assert result.names == ["relu#0", "a+b", "relu#1"]
    files = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert files == ["000-relu#0.npy", "001-a+b.npy", "002-relu#1.npy"]  # before _common: 001-a_b.npy


# ---- model flags saved and restored

def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    model[2].eval()  # a submodule in eval mode and a frozen parameter: both must come back as they were
    model[0].bias.requires_grad_(False)
    return model


def _flags(model: nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)])


def test_preserved_flags_sets_then_restores_each_flag():
    model = _model()
    before = _flags(model)
    with preserved_flags(model, training=False, requires_grad=True, inplace=False) as inside:
        assert inside is model
        assert _flags(model) == ([False] * 6, [True] * 4, [False, False])
    assert _flags(model) == before


def test_preserved_flags_leaves_unnamed_flags_alone_and_restores_on_error():
    model = _model()
    before = _flags(model)
    with pytest.raises(RuntimeError), preserved_flags(model, requires_grad=False):
        assert _flags(model) == (before[0], [False] * 4, before[2])
        model[1].inplace = False  # not named: the block's own change stays
        raise RuntimeError
    assert _flags(model) == (before[0], before[1], [False, False])


# ---- files and numbers

def test_write_atomic_replaces_with_plain_permissions(tmp_path):
    path = tmp_path / "sub" / "f.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["f.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_finite_or_none():
    assert finite_or_none(None) is None and finite_or_none(float("nan")) is None
    assert finite_or_none(float("-inf")) is None and finite_or_none(2) == 2.0
