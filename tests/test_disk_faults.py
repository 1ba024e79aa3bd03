"""A folder the file system refuses (full, read-only, not ours, a name too long) is one line, exit 2, and
loses nothing (issue 31, point 3).  The faults are simulated at the writer, not by mounting a disk."""

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
from _cli import assert_one_line_error, run_cli

from bnprobe._common import write_atomic
from bnprobe.cli import cli
from bnprobe.cli._faults import fault_line

STUDY = ["cnn4", "--dataset", "tiny-study", "--variants", "bn,identity", "--epochs", "1", "--samples", "16",
         "--probes", "sparsity", "--batch-size", "32", "--device", "cpu", "--quiet"]
_MKSTEMP = tempfile.mkstemp


def _refuse(monkeypatch, code: int, when=lambda prefix, folder: True) -> None:
    """Every atomic write whose temporary file ``when(prefix, folder)`` picks fails with ``code``."""
    def mkstemp(*args, prefix="", dir=None, **kwargs):
        if when(prefix, Path(dir)):
            raise OSError(code, os.strerror(code), str(Path(dir) / f"{prefix}x.tmp"))
        return _MKSTEMP(*args, prefix=prefix, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "study"
    assert run_cli("run", *STUDY, "--out", out).exit_code == 0
    return out


def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(OSError) as caught:
        write_atomic(path, "new")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_full_disk_mid_study_is_one_line_and_resume_continues(tmp_path, monkeypatch):
    out = tmp_path / "study"
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, lambda prefix, folder: prefix.startswith(".identity-seed0"))
        result = run_cli("run", *STUDY, "--out", out)
    assert_one_line_error(result, "identity-seed0", "No space left on device", "free space on its disk",
                          "--resume")
    kept = json.loads((out / "results.json").read_text())
    assert [run["variant"] for run in kept["runs"]] == ["bn"]  # the finished run is kept
    result = run_cli("run", *STUDY, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert [run["variant"] for run in json.loads((out / "results.json").read_text())["runs"]] == ["bn", "identity"]


@pytest.mark.parametrize(("code", "fix"), [(errno.EROFS, "give --out a folder on a writable disk"),
                                           (errno.EACCES, "check its permissions, or give another --out")])
def test_a_read_only_or_forbidden_out_is_one_line(tmp_path, monkeypatch, code, fix):
    out = tmp_path / "locked" / "study"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.is_relative_to(tmp_path / "locked"):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert_one_line_error(run_cli("run", *STUDY, "--out", out), str(tmp_path / "locked"), os.strerror(code), fix)


def test_a_name_too_long_is_one_line(tmp_path):
    out = tmp_path / ("x" * 300)
    assert_one_line_error(run_cli("run", *STUDY, "--out", out), "File name too long", "give a shorter path")


def test_report_on_a_read_only_study_shows_it_and_writes_nothing(finished, monkeypatch):
    files = {path: path.read_bytes() for path in finished.rglob("*") if path.is_file()}
    _refuse(monkeypatch, errno.EROFS)
    result = run_cli("report", finished)
    assert result.exit_code == 0, result.output
    assert "sparsity" in result.output and "Traceback" not in result.output
    assert "did not rewrite the study's files" in result.output and "Read-only file system" in result.output
    assert {path: path.read_bytes() for path in finished.rglob("*") if path.is_file()} == files


@pytest.mark.parametrize("command", ["run", "merge", "report", "surgery"])
def test_each_fix_names_only_flags_of_its_command(command):
    flags = {flag for param in cli.get_command(None, command).params for flag in param.opts}
    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG, errno.EIO):
        line = fault_line(OSError(code, os.strerror(code), "/somewhere"), flags)
        assert {word for word in line.replace(",", " ").split() if word.startswith("--")} <= flags, line
