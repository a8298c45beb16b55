"""Data-parallel meta-training (`--nproc`, gloo on CPU) computes what one process computes.

A single-process run is cut after its first checkpoint and resumed with `--nproc 2`: two processes that
each take half of every meta-batch and average their meta-gradients (with hard-task meta-batches, whose
failure classes are gathered from both ranks). Its parameters, and Adam's moment estimates — running means
of the meta-gradients — end equal to an uninterrupted single-process run over the same tasks: the
distributed step, the followers' resume and the shared sampler state are all exercised by one launch.

The head starts from zero: a learned shared class vector gets a meta-gradient that is exactly zero in
theory (softmax − one-hot sums to zero over the classes) and prototype heads ignore a shift of every
feature, so the last BatchNorm bias gets almost none; Adam would turn the float noise of such entries
into full-size steps and no two summation orders could agree on them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl.pipeline.atomic import read_jsonl
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train

REPO = Path(__file__).resolve().parents[3]
ADAM_LR = MetaTrainConfig().outer_lr  # Adam moves a parameter by at most about this much per step
FAST = ["--data", "synthetic:30", "--ways", "3", "--shots", "1", "--queries", "2", "--meta-batch", "4",
        "--inner-steps", "1", "--val-every", "2", "--val-episodes", "4", "--device", "cpu",
        "--hard-tasks", "--head-init", "zero", "--calibrate-episodes", "0", "-q"]


def mtl(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RANK", None)
    return subprocess.run([sys.executable, "-m", "mtl", "meta-train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


class Interrupt(Exception):
    pass


def assert_same_state(a: Path, b: Path) -> None:
    """Same iteration and sampler state; parameters within a tenth of one Adam step (lr 1e-3: Adam divides
    each meta-gradient by its own scale, so the float noise of a near-zero entry becomes a relative error of
    its step); Adam's moments — running means of the meta-gradients — within 1e-3 of each tensor's scale."""
    one, two = load_checkpoint(a / "last.safetensors"), load_checkpoint(b / "last.safetensors")
    assert one.meta["iteration"] == two.meta["iteration"]
    assert torch.equal(one.rng["sampler"], two.rng["sampler"])
    for name, tensor in one.model.items():
        torch.testing.assert_close(tensor, two.model[name], rtol=0, atol=0.1 * ADAM_LR, msg=name)
    assert one.optim.keys() == two.optim.keys()
    for name, tensor in one.optim.items():
        scale = float(tensor.abs().max())
        torch.testing.assert_close(tensor, two.optim[name], rtol=1e-3, atol=1e-3 * scale, msg=name)


@pytest.mark.slow
def test_two_gloo_processes_resume_a_run_and_end_where_one_process_ends(tmp_path):
    cfg = dict(data="synthetic:30", ways=3, shots=1, queries=2, meta_batch=4, inner_steps=1, val_every=2,
               val_episodes=4, device="cpu", hard_tasks=True, head_init="zero", iterations=4, calibrate_episodes=0)
    meta_train(MetaTrainConfig(out=str(tmp_path / "one"), **cfg))

    def stop_after_first_checkpoint(kind, done, total, info):
        if kind == "iteration" and done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        meta_train(MetaTrainConfig(out=str(tmp_path / "two"), **cfg), stop_after_first_checkpoint)
    resumed = mtl(*FAST, "--iterations", "4", "--nproc", "2", "--out", str(tmp_path / "two"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(tmp_path / "one", tmp_path / "two")
    assert [r["iteration"] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")] == [2, 4]  # rank 0 alone logs
