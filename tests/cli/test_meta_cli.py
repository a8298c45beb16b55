import json

import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from mtl.pipeline.algorithms import algorithm_names, get_algorithm

runner = CliRunner()
FAST = ["--data", "synthetic:30", "--ways", "3", "--shots", "1", "--queries", "2", "--meta-batch", "2",
        "--inner-steps", "1", "--iterations", "2", "--val-every", "2", "--val-episodes", "4", "--device", "cpu",
        "--calibrate-episodes", "0", "-q"]


@pytest.mark.parametrize("algorithm", algorithm_names())
def test_every_algorithm_meta_trains_from_the_cli_and_its_checkpoint_evaluates(algorithm, tmp_path, pretrained_run):
    out = tmp_path / algorithm
    needs_init = get_algorithm(algorithm).needs_init
    extra = ["--init", str(pretrained_run[0]), "--data", "synthetic:60"] if needs_init else []
    result = runner.invoke(app, ["meta-train", "--algorithm", algorithm, "--out", str(out), *FAST, *extra])
    assert result.exit_code == 0, result.output
    assert (out / "best.safetensors").is_file() and "meta-trained" in result.stdout
    result = runner.invoke(app, ["evaluate", str(out), "--ways", "4", "--shots", "1", "--queries", "3",
                                 "--episodes", "6", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["method"] == ("prototype" if get_algorithm(algorithm).head == "prototype" else "adapt")
    assert payload["ways"] == 4 and 0.0 <= payload["accuracy"] <= 1.0


def test_sinusoid_meta_trains_and_evaluates_as_regression(tmp_path):
    out = tmp_path / "sine"
    result = runner.invoke(app, ["meta-train", "--data", "sinusoid", "--algorithm", "maml", "--shots", "5",
                                 "--queries", "5", "--iterations", "3", "--val-every", "3", "--inner-lr", "0.01",
                                 "--out", str(out),
                                 "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(out), "--shots", "5", "--episodes", "10", "--json"])
    payload = json.loads(result.stdout)
    assert "mse" in payload and payload["mse"] >= 0


def test_meta_train_usage_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["meta-train", "--algorithm", "mtl", "--out", str(tmp_path / "m"), *FAST])
    assert result.exit_code == 2 and "needs --init" in result.output
    result = runner.invoke(app, ["meta-train", "--data", "sinusoid", "--algorithm", "protonet",
                                 "--out", str(tmp_path / "s"), "-q"])
    assert result.exit_code == 2 and "sinusoid supports" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nothing"), "--method", "adapt"])
    assert result.exit_code == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(("extra", "message"), [
    (["--nproc", "0"], "--nproc must be ≥ 1"),
    (["--nproc", "2", "--meta-batch", "3"], "does not split evenly"),
    (["--nproc", "2", "--device", "cuda"], "no CUDA GPU"),
])
def test_bad_process_counts_are_one_line_usage_errors(extra, message, tmp_path):
    result = runner.invoke(app, ["meta-train", "--out", str(tmp_path / "m"), *FAST, *extra])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_more_processes_than_gpus_is_refused_before_launching(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = runner.invoke(app, ["meta-train", "--out", str(tmp_path / "m"), *FAST, "--nproc", "2",
                                 "--device", "cuda"])
    assert result.exit_code == 2 and "need 2 CUDA GPUs, but this machine has 1" in result.output
    assert not (tmp_path / "m").exists()
