from typer.testing import CliRunner

from mtl.cli.app import app

runner = CliRunner()


def test_export_writes_a_bundle_and_says_what_was_checked(pretrained_run, tmp_path):
    result = runner.invoke(app, ["export", str(pretrained_run[0]), "--out", str(tmp_path / "b"), "--single-file"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.mtlb").is_file() and "onnx.checker" in result.stdout


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "none"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_export_refuses_an_opset_out_of_range(pretrained_run, tmp_path):
    result = runner.invoke(app, ["export", str(pretrained_run[0]), "--out", str(tmp_path / "b"), "--opset", "7"])
    assert result.exit_code != 0 and "opset" in result.output
