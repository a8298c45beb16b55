"""Bad support folders and step sizes on the device.

Each bad input ends in one line on stderr naming the culprit, a non-zero exit, no traceback, and nothing
written or the previous output left as it was."""


import pytest

from mtl.cli.app import app
from tests.bad_inputs.helpers import CLASSES, adapt_args, fails_cleanly, runner, snapshot
from tests.device_runtime.bundle_factory import read_manifest, write_manifest, write_support


@pytest.mark.parametrize("case, culprit", [
    ("missing-dir", "does not exist"), ("no-classes", "has no class sub-folders"), ("empty-class", "has no images"),
    ("one-class", "at least 2 classes, got 1 ('circle')"), ("case-duplicates", "differ only in case"),
    ("unreadable-image", "cannot read image"),
])
def test_a_bad_support_folder_is_named_and_nothing_is_written(case, culprit, bundle, tmp_path):
    support = tmp_path / "support"
    if case != "missing-dir":
        support.mkdir()
    if case in ("empty-class", "unreadable-image", "case-duplicates"):
        write_support(support, CLASSES[:2])
    if case == "empty-class":
        (support / "empty").mkdir()
    if case == "one-class":
        write_support(support, CLASSES[:1])
    if case == "case-duplicates":
        write_support(support, ["Circle"])
    if case == "unreadable-image":
        (support / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), culprit)
    assert not (tmp_path / "adapted").exists()


def test_a_std_that_would_overflow_preprocessing_is_refused_at_verify(bundle, tmp_path):
    meta = read_manifest(bundle)
    meta["input"]["std"] = [1e-45]  # positive, but x / std overflows float32: refused before any image is read
    write_manifest(bundle, meta)
    support = write_support(tmp_path / "support", CLASSES)
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), "input.std must be between")
    assert not (tmp_path / "adapted").exists()


@pytest.mark.parametrize("lr", ["1e38", "3e38"])
def test_a_diverging_step_size_is_detected_rolled_back_and_the_old_state_kept(lr, bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, adapt_args(bundle, support, out, "--steps", "3")).exit_code == 0
    before = snapshot(out)
    line = fails_cleanly(adapt_args(bundle, support, out, "--steps", "8", "--lr", lr), "diverged")
    assert "rolled back to the last finite state" in line and "try a smaller lr" in line
    assert snapshot(out) == before


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_non_positive_or_non_finite_step_size_is_a_usage_error(value, bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES[:2])
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted", "--lr", value), "lr must be", code=2)
    assert not (tmp_path / "adapted").exists()
