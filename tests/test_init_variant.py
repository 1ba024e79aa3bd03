"""The untrained reference ``init``: each seed's ``bn`` model as initialised, evaluated and probed with
no training, beside the trained variants, on the fused and plain paths, on resume and when probed again."""

import json
from dataclasses import asdict

import pytest
import torch
from _cli import assert_one_line_error, run_cli

from bnprobe._common import INIT_VARIANT
from bnprobe.data import Dataset, load_dataset
from bnprobe.errors import BnprobeError
from bnprobe.report import Results
from bnprobe.study import StudyConfig, reprobe_study, run_study
from bnprobe.study._events import StudyListener
from bnprobe.study._run import build_seeded_model
from bnprobe.train import TrainConfig
from bnprobe.train._flags import chance_threshold, run_flags
from bnprobe.train._state import checkpoint_path, load_train_state

VARIANTS = ["bn", "identity+bias", INIT_VARIANT]  # as the potgieter2025 preset lists them


def _blobs() -> Dataset:
    """The tests' tiny-study data (tests/conftest.py): 4 classes, 64 images to train and 32 to test."""
    return load_dataset("tiny-study")


def _config(**changes) -> StudyConfig:
    """The study; the preset's no-BN learning rate is set for every variant but bn, init too (which ignores it)."""
    no_bn = {"lr": 3e-3}
    return StudyConfig(**{"model": "cnn4", "variants": VARIANTS, "seeds": 2, "samples": 16, "probes": ["sparsity"],
                          "device": "cpu", "probe_workers": 0, "train": TrainConfig(epochs=1, batch_size=32),
                          "overrides": {"identity+bias": no_bn, INIT_VARIANT: no_bn}, **changes})


class _Planned(StudyListener):
    def __init__(self) -> None:
        self.planned, self.started = {}, []

    def training_planned(self, variant, seeds, reason):
        self.planned[variant] = (seeds, reason)

    def training_started(self, variant, seed, epochs):
        self.started.append((variant, seed))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A fused study (the vmapped path, here on the CPU) with ``init``: its folder, results and listener."""
    out = tmp_path_factory.mktemp("init") / "study"
    listener = _Planned()
    results = run_study(_config(fuse=True), out=out, dataset=_blobs(), listener=listener)
    return out, results, listener


def _runs(results: Results, variant: str) -> list:
    return [run for run in results.runs if run.variant == variant]


def test_init_is_the_bn_model_as_initialised_and_trains_nothing(study):
    out, results, listener = study
    assert [(run.variant, run.seed) for run in results.runs] == [(v, s) for s in (0, 1) for v in VARIANTS]
    assert listener.planned == {"bn": ([0, 1], None), "identity+bias": ([0, 1], None)}  # fused; init not trained
    assert (INIT_VARIANT, 0) not in listener.started
    for seed in (0, 1):
        start = build_seeded_model("cnn4", seed, _blobs()).state_dict()  # what every variant of the seed starts from
        saved = load_train_state(checkpoint_path(out, INIT_VARIANT, seed))
        assert saved["epoch"] == 0 and saved["model"].keys() == start.keys()
        assert all(torch.equal(saved["model"][key], value) for key, value in start.items())
        trained = load_train_state(checkpoint_path(out, "bn", seed))["model"]
        assert not torch.equal(trained["features.0.weight"], start["features.0.weight"])  # bn did train from it


def test_init_is_evaluated_probed_and_reported_without_a_chance_flag(study):
    _, results, _ = study
    chance = chance_threshold(4, 32)
    for run in _runs(results, INIT_VARIANT):
        assert run.epochs_run == 0 and run.history == [] and run.final_loss is None
        assert run.diverged_at_epoch is None and run.test_accuracy <= chance and run.train_accuracy is not None
        assert run.train_mode_test_accuracy is not None  # it has BatchNorm: both modes measured
        assert run.probes["sparsity"].keys() == set(results.layers) and not run.failures
        assert "at_chance" not in [flag["name"] for flag in run.flags]
    assert {run.seed for run in _runs(results, "bn")} == {0, 1}  # paired with bn by seed in the report


def test_an_untrained_run_is_not_flagged_at_chance_but_a_trained_one_is():
    data = _blobs()
    numbers = type("Numbers", (), {"test_accuracy": 0.25, "train_mode_test_accuracy": 0.25, "diverged_at_epoch": None})
    assert [flag["name"] for flag in run_flags(numbers, data)] == ["at_chance"]
    assert run_flags(numbers, data, untrained=True) == []


def test_init_reruns_on_resume_and_is_probed_again_without_a_chance_flag(study, tmp_path):
    source, results, _ = study
    out = tmp_path / "study"
    out.mkdir()
    saved = json.loads((source / "results.json").read_text())
    for run in saved["runs"]:
        run["train_mode_test_accuracy"] = None  # as saved before it was measured: probe measures it again
    saved["runs"] = [run for run in saved["runs"] if (run["variant"], run["seed"]) != (INIT_VARIANT, 1)]
    (out / "results.json").write_text(json.dumps(saved))
    (out / "checkpoints").mkdir()
    for variant in VARIANTS:
        for seed in (0, 1):
            checkpoint_path(out, variant, seed).write_bytes(checkpoint_path(source, variant, seed).read_bytes())
    resumed = run_study(_config(fuse=True), out=out, dataset=_blobs(), resume=True)
    again = {(run.variant, run.seed): run for run in resumed.runs}
    first = {(run.variant, run.seed): run for run in results.runs}
    assert again.keys() == first.keys()
    assert asdict(again[(INIT_VARIANT, 1)]) == asdict(first[(INIT_VARIANT, 1)])  # the same run, done again
    reprobed = reprobe_study(out, ["hdbscan"], dataset=_blobs(), device="cpu", probe_workers=0)
    for run in _runs(reprobed, INIT_VARIANT):
        assert run.probes["hdbscan"] and run.probes["sparsity"] and run.train_mode_test_accuracy is not None
        assert "at_chance" not in [flag["name"] for flag in run.flags]


def test_the_cli_runs_init_and_reports_it(tmp_path):
    result = run_cli("run", "cnn4", "--variants", "bn,identity,init", "--dataset", "tiny-study", "--epochs", "1",
                     "--seeds", "2", "--samples", "16", "--batch-size", "32", "--device", "cpu", "--probes",
                     "sparsity", "--probe-workers", "0", "--out", tmp_path / "study")
    assert result.exit_code == 0, result.output
    assert "init (model as built, not trained)" in result.output
    assert "Δ init" in result.output
    saved = Results.load(tmp_path / "study")
    assert [run.epochs_run for run in _runs(saved, INIT_VARIANT)] == [0, 0]
    assert saved.to_dict()["config"]["variants"] == ["bn", "identity", "init"]


def test_a_bad_variant_name_is_one_line_that_lists_init():
    result = run_cli("run", "cnn4", "--variants", "bn,inti")
    assert_one_line_error(result, "unknown variant 'inti'; valid variants: bn, identity", ", init")


def test_init_in_a_probe_only_study_is_refused():
    with pytest.raises(BnprobeError, match="probe-only trains nothing"):
        StudyConfig(model="cnn4", variants=["bn", INIT_VARIANT], mode="probe-only", init_weights="w.pt")


def test_a_resumed_study_may_add_variants_after_the_saved_ones(tmp_path):
    """A study saved with bn and identity+bias continues with init added: the saved runs are kept as they
    are and only init runs; a changed setting of a saved variant is still refused."""
    out = tmp_path / "study"
    first = run_study(_config(variants=VARIANTS[:2], overrides={"identity+bias": {"lr": 3e-3}}), out=out,
                      dataset=_blobs())
    resumed = run_study(_config(), out=out, dataset=_blobs(), resume=True)
    assert [(run.variant, run.seed) for run in resumed.runs] == [(v, s) for s in (0, 1) for v in VARIANTS]
    kept = {(run.variant, run.seed): asdict(run) for run in first.runs}
    assert all(asdict(run) == kept[(run.variant, run.seed)] for run in resumed.runs if run.variant != INIT_VARIANT)
    assert Results.load(out).config["variants"] == VARIANTS
    with pytest.raises(BnprobeError, match="overrides"):
        run_study(_config(variants=[*VARIANTS, "groupnorm"], overrides={"identity+bias": {"lr": 1e-2}}), out=out,
                  dataset=_blobs(), resume=True)
    with pytest.raises(BnprobeError, match="variants"):
        run_study(_config(variants=["identity+bias", "bn", INIT_VARIANT]), out=out, dataset=_blobs(), resume=True)
