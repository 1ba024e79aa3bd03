"""Progress off a terminal: labelled lines per run and epoch, done lines that name the run and split
its time, "kept" on resume, internal notes only when verbose, and listeners of the old hook."""

import io
import re

import pytest
import torch
from rich.console import Console

from bnprobe.cli._progress import HEARTBEAT_SECONDS, RichListener
from bnprobe.data import Dataset, Split
from bnprobe.report import Results
from bnprobe.study import RunTimings, StudyConfig, StudyListener, reprobe_study, run_study
from bnprobe.train import TrainConfig

EPOCH_LINE = (r"^{variant} seed {seed} epoch {epoch}/2: loss \d+\.\d+ \(train mode\)(, test acc \d\.\d+)?, "
              r"\d+\.\ds elapsed, eta \d+\.\ds$")
DONE_LINE = (r"^\[\d/\d\] {variant} seed {seed} done in \d+\.\ds \(train \d+\.\ds{fused}, capture \d+\.\ds, "
             r"probe \d+\.\ds\)$")
ACCURACY_LINE = r"^  train acc \(eval mode\) \d\.\d+, test acc \(eval mode\) \d\.\d+$"


def _data() -> Dataset:
    """96 grey 8x8 images in 4 classes: 64 to train, 32 to test."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] * 2 + torch.randn(96, 1, 8, 8, generator=g)
    return Dataset("blobs", Split(x[:64], y[:64]), Split(x[64:], y[64:]), 4)


def _config(**changes) -> StudyConfig:
    values = {"model": "cnn4", "variants": ["bn", "identity"], "samples": 16, "probes": ["sparsity"],
              "device": "cpu", "probe_workers": 0, "train": TrainConfig(epochs=2, batch_size=32), **changes}
    return StudyConfig(**values)


def _listener(**options) -> tuple[RichListener, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=80)
    assert not console.is_terminal
    return RichListener(console=console, **options), buffer


def _run(out, config, **options) -> list[str]:
    listener, buffer = _listener(**options)
    with listener:
        run_study(config, out=out, dataset=_data(), listener=listener, resume=True)
    return buffer.getvalue().splitlines()


def _matching(pattern: str, lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(pattern, line)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "study"
    return out, _run(out, _config())


def test_off_a_terminal_every_run_and_epoch_gets_a_labelled_line(study):
    _, lines = study
    for variant in ("bn", "identity"):
        first = _matching(EPOCH_LINE.format(variant=variant, seed=0, epoch=1), lines)
        last = _matching(EPOCH_LINE.format(variant=variant, seed=0, epoch=2), lines)
        assert len(first) == 1 and len(last) == 1, lines
        assert "test acc" in first[0]  # measured after epoch 1; epoch 2's is the final evaluation's
        assert len(_matching(DONE_LINE.format(variant=variant, seed=0, fused=""), lines)) == 1, lines
        done = lines.index(_matching(DONE_LINE.format(variant=variant, seed=0, fused=""), lines)[0])
        assert re.match(ACCURACY_LINE, lines[done + 1]), lines  # the accuracies on a line of their own
        assert max(len(lines[done]), len(lines[done + 1])) <= 80, lines
    assert not any("fusion" in line or "one run at a time" in line for line in lines)


def test_resume_says_kept_and_verbose_shows_the_internal_notes(study, tmp_path):
    out, _ = study
    lines = _run(out, _config())
    kept = r"^\[{n}/2\] {variant} seed 0 kept \(finished before --resume\)$"
    assert len(lines) == 4 and re.match(kept.format(n=1, variant="bn"), lines[0]), lines
    assert re.match(kept.format(n=2, variant="identity"), lines[2]), lines
    assert all(re.match(ACCURACY_LINE, line) for line in lines[1::2]), lines
    verbose = _run(tmp_path / "fresh", _config(variants=["bn"]), verbose=True)
    assert "bn seeds 0: one run at a time: fusion is off (on by default on CUDA only)" in verbose


def test_probing_again_names_each_run_and_its_capture_and_probe_time(study):
    out, _ = study
    listener, buffer = _listener()
    with listener:
        reprobe_study(out, ["sparsity"], dataset=_data(), device="cpu", probe_workers=0, listener=listener)
    lines = buffer.getvalue().splitlines()
    for variant in ("bn", "identity"):
        pattern = rf"^\[\d/2\] {variant} seed 0 done in \d+\.\ds \(capture \d+\.\ds, probe \d+\.\ds\)$"
        assert len(_matching(pattern, lines)) == 1, lines


def test_fused_training_reports_every_run_and_epoch(tmp_path):
    lines = _run(tmp_path / "fused", _config(variants=["bn"], seeds=2, fuse=True))
    for seed in (0, 1):
        for epoch in (1, 2):
            assert len(_matching(EPOCH_LINE.format(variant="bn", seed=seed, epoch=epoch), lines)) == 1, lines
        assert len(_matching(DONE_LINE.format(variant="bn", seed=seed, fused=" shared by 2 fused runs"),
                             lines)) == 1, lines


class _OldListener(StudyListener):
    """A user's listener written against ``run_done(run, seconds)``."""

    def __init__(self):
        self.done = []

    def run_done(self, run, seconds):
        self.done.append((run.variant, run.seed, seconds))


def test_a_listener_of_the_old_run_done_hook_still_hears_every_run(tmp_path):
    listener = _OldListener()
    run_study(_config(), out=tmp_path / "old", dataset=_data(), listener=listener)
    assert [(v, s) for v, s, _ in listener.done] == [("bn", 0), ("identity", 0)]
    assert all(isinstance(seconds, float) and seconds > 0 for *_, seconds in listener.done)


def _capture_of_300(listener):
    listener.capture_started("bn", 0, samples=300)
    return lambda: listener.capture_batch("bn", 0, 100), "capture bn seed 0: 200/300 samples, 31.0s elapsed"


def _second_epoch_of_3(listener):
    listener.training_started("bn", 0, epochs=3)
    listener.epoch_done("bn", 0, 1, {"loss": 1.5})
    steps = iter(range(1, 701))
    expected = "bn seed 0 epoch 2/3: step 2/700, 31.0s elapsed"
    return lambda: listener.training_step("bn", 0, next(steps), 700, 2), expected


@pytest.mark.parametrize("stage", [_capture_of_300, _second_epoch_of_3], ids=["capture", "long-epoch"])
def test_a_long_stage_prints_a_line_at_least_every_30_seconds(stage):
    listener, buffer = _listener()
    now = [0.0]
    listener.clock = lambda: now[0]
    listener.study_started(total_runs=1)
    advance, expected = stage(listener)
    buffer.truncate(0), buffer.seek(0)
    advance()  # quick: no line yet
    now[0] = HEARTBEAT_SECONDS + 1
    advance()
    advance()  # just printed: no second line
    assert buffer.getvalue().splitlines() == [expected]


def test_a_study_tells_its_listener_of_every_step(tmp_path):
    class Steps(StudyListener):
        def __init__(self):
            self.steps = []

        def training_step(self, variant, seed, step, steps, epoch):
            self.steps.append((variant, seed, step, steps, epoch))

    listener = Steps()
    run_study(_config(variants=["bn"]), dataset=_data(), out=tmp_path / "out", listener=listener)
    assert listener.steps == [("bn", 0, step, 2, epoch) for epoch in (1, 2) for step in (1, 2)]  # 64 images, batch 32


def test_a_resumed_run_counts_its_steps_in_the_epochs_it_had_trained_before(tmp_path):
    class StopAfterEpoch1(StudyListener):
        def epoch_done(self, variant, seed, epoch, metrics):
            raise KeyboardInterrupt

    class Steps(StudyListener):
        def __init__(self):
            self.epochs = []

        def training_step(self, variant, seed, step, steps, epoch):
            self.epochs.append(epoch)

    config = _config(variants=["bn"], checkpoints="resume")
    with pytest.raises(KeyboardInterrupt):
        run_study(config, dataset=_data(), out=tmp_path / "out", listener=StopAfterEpoch1())
    listener = Steps()
    run_study(config, dataset=_data(), out=tmp_path / "out", listener=listener, resume=True)
    assert listener.epochs == [2, 2]  # epoch 1 was trained before the interruption; the progress says "epoch 2/2"


def test_on_a_terminal_the_done_line_names_the_run_too(study):
    buffer = io.StringIO()
    listener = RichListener(console=Console(file=buffer, width=200, force_terminal=True))
    run = Results.load(study[0]).runs[1]
    with listener:
        listener.study_started(total_runs=1)
        listener.run_finished(run, RunTimings(train=3.0, capture=1.5, probe=0.3))
    assert "[1/1] identity seed 0 done in 4.8s (train 3.0s, capture 1.5s, probe 0.3s)" in buffer.getvalue()


def test_a_late_stage_event_of_a_filed_run_draws_no_bar_until_the_listener_starts_again():
    from rich.console import Console

    from bnprobe.cli._progress import RichListener
    from bnprobe.report._results import RunResult
    from bnprobe.study import RunTimings

    listener = RichListener(Console(file=__import__("io").StringIO(), force_terminal=True))
    listener.study_started(1)
    run = RunResult(variant="bn", seed=0, train_accuracy=1.0, test_accuracy=1.0, final_loss=0.1)
    listener.run_finished(run, RunTimings(train=1.0))
    listener.capture_started("bn", 0, 10)  # a Ray task's event that came in after its run was filed
    assert [task.description for task in listener.progress.tasks] == ["study"]
    listener.study_started(1)  # re-probing the same runs afterwards
    listener.capture_started("bn", 0, 10)
    assert "capture bn seed 0" in [task.description for task in listener.progress.tasks]
    listener.progress.stop()
