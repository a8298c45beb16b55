import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from mtl.cli.app import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "pretrain" in result.output and "evaluate" in result.output


def test_help_does_not_import_torch():
    code = ("import sys; from mtl.cli.app import app; "
            "assert not {'torch', 'matplotlib'} & set(sys.modules), 'torch or matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_evaluate_json_prints_one_object_with_the_protocol(pretrained_run):
    out, _ = pretrained_run
    result = runner.invoke(app, ["evaluate", str(out), "--ways", "5", "--shots", "1", "--episodes", "50",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"accuracy", "ci95", "episodes", "ways", "shots", "queries", "method", "data", "checkpoint"} <= set(payload)
    assert payload["episodes"] == 50 and payload["data"] == "synthetic:60"
    assert 0.2 < payload["accuracy"] <= 1.0


def _strict(constant):
    raise ValueError(f"{constant} is not JSON")


def test_evaluate_json_of_one_episode_is_strict_json_with_a_null_interval(pretrained_run):
    result = runner.invoke(app, ["evaluate", str(pretrained_run[0]), "--episodes", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout, parse_constant=_strict)  # one episode has no CI: null, never NaN
    assert payload["ci95"] is None and payload["episodes"] == 1


def test_evaluate_human_output_shows_the_interval(pretrained_run):
    out, result = pretrained_run
    steps = result.calibration.steps  # chosen on the validation classes, as its bundle adapts
    result = runner.invoke(app, ["evaluate", str(out), "--episodes", "30", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert f"5-way 1-shot adapt, {steps} steps:" in result.stdout and "± " in result.stdout


def test_missing_checkpoint_is_one_line_exit_1(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path / "missing"), "--device", "cpu"])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_data_spec_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["pretrain", "--data", "imagenet-22k:/x", "--out", str(tmp_path / "r"),
                                 "--device", "cpu", "-q"])
    assert result.exit_code == 2
    assert "imagenet-22k" in result.output and "Traceback" not in result.output


def test_missing_data_path_is_named(tmp_path):
    missing = tmp_path / "no-such-dir"
    result = runner.invoke(app, ["pretrain", "--data", f"omniglot:{missing}", "--out", str(tmp_path / "r"),
                                 "--device", "cpu", "-q"])
    assert result.exit_code == 1
    assert str(missing) in result.output.replace("\n", "") and "Traceback" not in result.output


def test_bad_option_value_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["pretrain", "--epochs", "0", "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and "epochs" in result.output


def test_pretrain_from_the_cli_writes_a_run(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--data", "synthetic:30", "--epochs", "1", "--out", str(out),
                                 "--device", "cpu", "--calibrate-episodes", "5", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "best.safetensors").is_file() and "best validation" in result.stdout
    assert "device settings (validation classes)" in result.stdout


def test_a_teacher_on_other_classes_or_missing_is_one_line_and_no_run(tmp_path, pretrained_run):
    for teacher, code, says in ((pretrained_run[0], 2, "other classes"), (tmp_path / "none", 1, "does not exist")):
        out = tmp_path / "student"
        result = runner.invoke(app, ["pretrain", "--data", "synthetic:60", "--rotations", "--epochs", "1",
                                     "--teacher", str(teacher), "--out", str(out), "--device", "cpu", "-q"])
        assert result.exit_code == code, result.output
        assert says in result.output.replace("\n", " ") and "Traceback" not in result.output
        assert not out.exists()
