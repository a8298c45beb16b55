"""Output paths that cannot be written, and config files that do not fit (issue 13).

An output under an existing file, a single-file export onto a directory or a place this process cannot write
is refused BEFORE the work, in one line; a write that fails anyway (a full disk, a read-only file system) is
one line naming the path, and what was there before is left whole. A config-file value of the wrong type is
named by its key before a run directory exists, and a run that died before its first checkpoint does not block
the corrected rerun.
"""

import errno
import os

import pytest

from mtl.cli.app import app
from tests.bad_inputs.helpers import CLASSES, adapt_args, fails_cleanly, runner, snapshot
from tests.device_runtime.bundle_factory import write_support


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("not a directory")
    return path


def test_adapt_out_under_a_file_is_refused_before_the_work(bundle, a_file, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    fails_cleanly(adapt_args(bundle, support, a_file / "adapted"), f"{a_file} is a file, not a directory", code=2)


@pytest.mark.parametrize("args", [
    ["pretrain", "--data", "synthetic:20", "--epochs", "1", "--device", "cpu", "-q", "--out"],
    ["meta-train", "--data", "synthetic:20", "--iterations", "1", "--device", "cpu", "-q", "--out"],
])
def test_a_training_run_under_a_file_is_refused_before_the_work(args, a_file):
    fails_cleanly([*args, str(a_file / "run")], "is a file, not a directory", code=2)


def test_export_onto_unwritable_places_is_refused_before_exporting(pretrained_run, a_file, tmp_path):
    run = str(pretrained_run[0])
    fails_cleanly(["export", run, "--out", str(a_file / "b")], "is a file, not a directory", code=2)
    (tmp_path / "taken.mtlb").mkdir()
    fails_cleanly(["export", run, "--out", str(tmp_path / "taken.mtlb"), "--single-file"], "is a directory", code=2)
    fails_cleanly(["export", run, "--out", str(a_file)], "exists and is not a directory", code=2)


def test_figures_and_reports_under_a_file_are_refused(pretrained_run, tiny_mtl_run, a_file, tmp_path):
    fails_cleanly(["evaluate", str(tiny_mtl_run), "--episodes", "4", "--device", "cpu", "--plot",
                   str(a_file / "c.png")], "is a file, not a directory", code=2)
    fails_cleanly(["report", str(pretrained_run[0]), "--out", str(a_file / "r")], "is a file, not a directory",
                  code=2)


def test_a_place_this_process_cannot_write_is_refused_before_the_work(bundle, tmp_path, monkeypatch):
    support = write_support(tmp_path / "support", CLASSES)
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("ro") else real(p, mode))
    fails_cleanly(adapt_args(bundle, support, tmp_path / "ro" / "adapted"), "cannot write in", code=2)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_adapting_is_one_line_and_the_previous_state_stays(bundle, tmp_path, monkeypatch):
    import mtl.device_runtime.atomic as atomic

    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, adapt_args(bundle, support, out, "--steps", "1")).exit_code == 0
    before = snapshot(out)
    monkeypatch.setattr(atomic.os, "fsync", _disk_full)
    fails_cleanly(adapt_args(bundle, support, out, "--steps", "4"), "No space left on device")
    monkeypatch.undo()
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted", "bundle", "support"]


def test_a_read_only_file_system_while_exporting_is_one_line(pretrained_run, tmp_path, monkeypatch):
    import mtl.device_runtime.atomic as atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    fails_cleanly(["export", str(pretrained_run[0]), "--out", str(tmp_path / "b.mtlb"), "--single-file"],
                  "Read-only file system")
    assert not (tmp_path / "b.mtlb").exists()


# ---------------------------------------------------------------- config files
@pytest.mark.parametrize("line, culprit", [
    ("batch_size = 64.0", "batch_size must be a whole number, got float 64.0"),
    ('lr = "fast"', "lr must be a number, got str 'fast'"),
    ("augment = 1", "augment must be true or false, got int 1"),
    ("split = [0.5, 0.5]", "split must be a list of 3 numbers"),
    ("epochs = [1, 2]", "epochs must be a whole number, got list"),
])
def test_a_config_value_of_the_wrong_type_is_named_before_any_run_directory(line, culprit, tmp_path):
    config = tmp_path / "pretrain.toml"
    config.write_text(line + "\n")
    out = tmp_path / "run"
    fails_cleanly(["pretrain", "--config", str(config), "--data", "synthetic:20", "--out", str(out), "-q"],
                  f"config file {config}: {culprit}", code=2)
    assert not out.exists()


def test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_rerun(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"epochs": 1}\n')  # what a run killed in its first epoch leaves
    (out / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.1}\n')
    result = runner.invoke(app, ["pretrain", "--data", "synthetic:20", "--epochs", "1", "--batch-size", "32",
                                 "--device", "cpu", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "last.safetensors").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the dead run's row is gone
    fails_cleanly(["pretrain", "--data", "synthetic:20", "--epochs", "1", "--out", str(out), "-q"],
                  "already holds a run", code=2)  # a run WITH a checkpoint is still protected
