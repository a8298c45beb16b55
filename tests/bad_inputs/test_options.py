"""Options out of range, resumes that do not fit, checkpoints that do not fit.

Each bad input ends in one line on stderr naming the culprit, a non-zero exit, no traceback, and nothing
written or the previous output left as it was."""

import json
import shutil
from pathlib import Path

import pytest

from tests.bad_inputs.helpers import fails_cleanly, snapshot

META = ["meta-train", "--data", "synthetic:20", "--iterations", "1", "--device", "cpu", "--calibrate-episodes", "0",
        "-q"]


@pytest.mark.parametrize("flag, value, culprit", [
    ("--ways", "1", "ways must be at least 2"),
    ("--shots", "0", "shots must be at least 1"),
    ("--queries", "0", "queries must be at least 1"),
    ("--inner-steps", "0", "inner steps"),
    ("--iterations", "0", "iterations"),
    ("--meta-batch", "0", "meta-batch"),
    ("--inner-lr", "-1", "learning rates must be positive"),
    ("--inner-lr", "inf", "learning rates must be positive and finite"),
    ("--outer-lr", "nan", "learning rates must be positive"),
    ("--chunk", "-1", "--chunk must be ≥ 0"),
    ("--option", "beta=0.5", "--algorithm maml has no option 'beta'; its options: none"),
    ("--option", "beta", "write it as KEY=VALUE"),
])
def test_meta_train_options_out_of_range_are_usage_errors(flag, value, culprit, tmp_path):
    fails_cleanly([*META, flag, value, "--out", str(tmp_path / "run")], culprit, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, culprit", [
    ("beta=1.5", "--option beta must be in [0, 1]"),
    ("beta=nan", "--option beta must be in [0, 1]"),
    ("beta=high", "--option beta must be a number, got str 'high'"),
    ("meta-learner=sgd", "meta-learner must be maml or reptile"),
    ("gamma=1", "--algorithm joint has no option 'gamma'; its options: beta, meta-learner"),
])
def test_an_algorithms_own_options_are_checked_and_named(option, culprit, tmp_path):
    fails_cleanly([*META, "--algorithm", "joint", "--option", option, "--out", str(tmp_path / "run")], culprit, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--epochs", "0"], "epochs"), (["--batch-size", "0"], "batch size"), (["--lr", "0"], "lr > 0"),
    (["--lr", "inf"], "lr > 0"), (["--image-size", "4"], "at least 8 pixels"),
])
def test_pretrain_options_out_of_range_are_usage_errors(args, culprit, tmp_path):
    fails_cleanly(["pretrain", "--data", "synthetic:20", *args, "--out", str(tmp_path / "run"), "--device", "cpu",
                   "-q"], culprit, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--ways", "1"], "ways must be at least 2"), (["--episodes", "0"], "episodes must be at least 1"),
    (["--steps", "-1"], "--steps must be ≥ 0"), (["--queries", "0"], "queries must be at least 1"),
])
def test_evaluate_options_out_of_range_are_usage_errors(args, culprit, pretrained_run):
    out, _ = pretrained_run
    fails_cleanly(["evaluate", str(out), *args, "--device", "cpu", "-q"], culprit, code=2)


def test_resume_with_other_options_is_refused_and_the_run_is_untouched(pretrained_run):
    out, _ = pretrained_run
    before = snapshot(out)
    fails_cleanly(["pretrain", "--data", "synthetic:60", "--epochs", "6", "--batch-size", "64", "--lr", "0.1",
                   "--out", str(out), "--device", "cpu", "--resume", "-q"], "lr: 0.05 → 0.1", code=2)
    assert snapshot(out) == before


def test_resume_of_a_checkpoint_copied_from_another_run_is_refused(pretrained_run, tmp_path):
    from mtl.pipeline.atomic import atomic_write_json
    from mtl.pipeline.errors import ConfigError
    from mtl.pipeline.train.pretrain import PretrainConfig, pretrain
    from tests.conftest import SMALL

    run = tmp_path / "run"
    shutil.copytree(pretrained_run[0], run)
    config = json.loads((run / "config.json").read_text())
    atomic_write_json(run / "config.json", {**config, "lr": 0.2})  # config.json says lr 0.2, the checkpoint 0.05
    before = snapshot(run)

    with pytest.raises(ConfigError, match=r"last.safetensors was made with other options \(lr: 0.05 → 0.2\)"):
        pretrain(PretrainConfig(out=str(run), resume=True, **dict(SMALL, lr=0.2)))
    assert snapshot(run) == before


def _other_backbone_checkpoint(pretrained_run, tmp_path) -> Path:
    """The pretrained conv4 tensors under metadata that says resnet12: the model built does not fit them."""
    from mtl.pipeline.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(pretrained_run[0] / "best.safetensors")
    ckpt.meta["model"] = {**ckpt.meta["model"], "backbone": "resnet12", "options": {"channels": [8, 8, 8, 8]}}
    ckpt.meta["config"] = {**ckpt.meta["config"], "backbone": "resnet12"}
    save_checkpoint(tmp_path / "other.safetensors", ckpt)
    return tmp_path / "other.safetensors"


@pytest.mark.parametrize("command", ["evaluate", "export", "meta-train --init"])
def test_a_checkpoint_from_a_different_backbone_is_named(command, pretrained_run, tmp_path):
    path = _other_backbone_checkpoint(pretrained_run, tmp_path)
    out = tmp_path / "out"
    args = {"evaluate": ["evaluate", str(path), "--episodes", "5", "--device", "cpu", "-q"],
            "export": ["export", str(path), "--out", str(out)],
            "meta-train --init": ["meta-train", "--data", "synthetic:60", "--iterations", "1", "--device", "cpu",
                                  "-q", "--algorithm", "mtl", "--init", str(path), "--backbone", "resnet12",
                                  "--out", str(out)]}[command]
    line = fails_cleanly(args, "do not fit")
    assert ("other.safetensors" in line) or ("--init" in line)
    assert not out.exists()


def test_meta_train_init_from_another_backbone_is_a_usage_error(pretrained_run, tmp_path):
    fails_cleanly([*META, "--algorithm", "mtl", "--init", str(pretrained_run[0]), "--backbone", "resnet12",
                   "--out", str(tmp_path / "run")], "holds a conv4 backbone but --backbone is resnet12", code=2)


def test_a_truncated_checkpoint_is_named(pretrained_run, tmp_path):
    path = tmp_path / "cut.safetensors"
    data = (pretrained_run[0] / "best.safetensors").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    fails_cleanly(["evaluate", str(path), "--device", "cpu", "-q"], "cut.safetensors is not a safetensors checkpoint")
