"""StudyConfig.init_weights, and its deprecated old name checkpoint."""

import dataclasses
import json
import warnings

import pytest

from bnprobe import StudyConfig
from bnprobe.errors import BnprobeError
from bnprobe.study._config import renamed_config


def test_init_weights_is_the_field_and_takes_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = StudyConfig(model="cnn4", init_weights="w.pt")
    assert config.init_weights == "w.pt"
    assert config.to_dict()["init_weights"] == "w.pt"
    assert "checkpoint" not in config.to_dict()


def test_the_old_keyword_still_works_with_a_future_warning():
    with pytest.warns(FutureWarning, match="use init_weights") as caught:
        config = StudyConfig(model="cnn4", checkpoint="w.pt")
    assert config.init_weights == "w.pt"
    assert caught[0].filename == __file__  # points at the caller's line, not at bnprobe


def test_the_old_attribute_reads_and_sets_init_weights_with_a_warning():
    config = StudyConfig(model="cnn4", init_weights="a.pt")
    with pytest.warns(FutureWarning, match="deprecated"):
        assert config.checkpoint == "a.pt"
    with pytest.warns(FutureWarning):
        config.checkpoint = "b.pt"
    assert config.init_weights == "b.pt"


def test_both_names_with_different_files_is_refused():
    with pytest.warns(FutureWarning), pytest.raises(BnprobeError, match="give init_weights"):
        StudyConfig(model="cnn4", init_weights="a.pt", checkpoint="b.pt")


def test_a_config_saved_under_the_old_name_still_loads():
    saved = json.loads(json.dumps(StudyConfig(model="cnn4").to_dict()))
    for newer in ("init_weights", "mode", "pretrained", "weights"):  # an old file has none of them
        del saved[newer]
    saved["checkpoint"] = "old.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = StudyConfig.from_dict(saved)
    assert config.init_weights == "old.pt" and config.mode == "fine-tune"  # as it ran: trained from those weights
    assert renamed_config({"checkpoint": None, "model": "cnn4"}) == {"init_weights": None, "model": "cnn4"}


def test_copying_a_config_does_not_warn():
    config = StudyConfig(model="cnn4", init_weights="w.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = dataclasses.replace(config, seeds=2)
    assert (copy.init_weights, copy.seeds) == ("w.pt", 2)


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("words", "study_file"), [
    (["--init-weights", "{w}"], None),
    (["--checkpoint", "{w}"], None),
    ([], 'init_weights = "{w}"\n'),
    ([], 'checkpoint = "{w}"\n'),
], ids=["option", "old-option", "study-file", "old-study-file-key"])
def test_the_command_line_takes_init_weights_under_both_names(tmp_path, monkeypatch, words, study_file):
    from click.testing import CliRunner

    import bnprobe.study
    from bnprobe.cli import cli

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    given = []

    def capture(config, **_kwargs):
        given.append(config)
        raise _Stop

    monkeypatch.setattr(bnprobe.study, "run_study", capture)
    args = ["run", "cnn4", "--out", str(tmp_path / "o"), *[w.format(w=weights) for w in words]]
    if study_file is not None:
        (tmp_path / "study.toml").write_text(study_file.format(w=weights))
        args += ["--config", str(tmp_path / "study.toml")]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, _Stop), result.output
    assert given[0].init_weights == str(weights)
