"""A crash or an interrupt while writing leaves what was there before.

Each bad input ends in one line on stderr naming the culprit, a non-zero exit, no traceback, and nothing
written or the previous output left as it was."""

from pathlib import Path

import pytest

from mtl.cli.app import app
from tests.bad_inputs.helpers import CLASSES, adapt_args, runner, snapshot
from tests.device_runtime.bundle_factory import write_support


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_a_crash_while_saving_over_an_adapted_state_leaves_it_whole(crash_after, bundle, tmp_path, monkeypatch):
    import mtl.device_runtime.adapted_state as adapted_state

    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, adapt_args(bundle, support, out, "--steps", "1")).exit_code == 0
    before = snapshot(out)
    real = adapted_state.write_files

    def crash(directory, files):  # the power goes out after `crash_after` of the three files
        real(directory, dict(list(files.items())[:crash_after]))
        raise KeyboardInterrupt

    monkeypatch.setattr(adapted_state, "write_files", crash)
    result = runner.invoke(app, adapt_args(bundle, support, out, "--steps", "9"))
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted", "bundle", "support"]  # no temp left behind



@pytest.mark.parametrize("args, culprit", [
    (["adapt", "b", "s", "--out", "o", "--steps", "-1"], "Invalid value for '--steps'"),
    (["meta-train", "--ways", "three"], "Invalid value for '--ways'"),
    (["pretrain", "--epochs", "2", "--nope"], "No such option: --nope"),
    (["bundle", "verify"], "Missing argument"),
])
def test_options_typer_cannot_parse_are_one_line_from_the_installed_command(args, culprit, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "mtl", *args], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []
