"""Fault injection: a training process killed at seeded random points (SIGKILL, then SIGINT) and resumed with
`--resume` ends with the same checkpoint and metrics as one uninterrupted run with the same seed.

The kills hit a real `mtl` subprocess wherever it happens to be (inside an epoch or iteration, inside a
checkpoint write); what makes the result equal is that every file is renamed into place whole and that
the last checkpoint carries the model, the optimizer state and the sampler RNG.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mtl.pipeline.atomic import read_jsonl
from mtl.pipeline.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]
RUNS = {  # each writes a metrics row (and last.safetensors) 6 times
    "pretrain": ['data = "synthetic:30"', "epochs = 6", "batch_size = 32", "val_episodes = 10", "seed = 3",
                 "calibrate_episodes = 0"],
    "meta-train": ['data = "synthetic:30"', 'algorithm = "maml"', "ways = 3", "shots = 1", "queries = 2",
                   "meta_batch = 2", "inner_steps = 1", "iterations = 24", "val_every = 4", "val_episodes = 5",
                   "seed = 3", "calibrate_episodes = 0"],
}
KILLS = (signal.SIGKILL, signal.SIGINT)


def _start(command: str, config: Path, out: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "mtl", command, "--config", str(config), "--out", str(out), "--device", "cpu",
            "-q", *(["--resume"] if resume else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # SIGINT at its default in the child: a suite started in the background by a shell without job control
    # inherits SIGINT ignored, and the run would then finish instead of stopping cleanly
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _rows(out: Path) -> int:
    try:
        return len(read_jsonl(out / "metrics.jsonl"))
    except (ValueError, OSError):
        return 0


def _kill_after(process: subprocess.Popen, out: Path, rows: int, delay: float, sig: signal.Signals) -> None:
    """Wait until `rows` metrics rows exist, then `delay` seconds more, then send `sig` (mid-epoch, usually)."""
    deadline = time.monotonic() + 240
    while _rows(out) < rows:
        assert process.poll() is None, f"finished before the kill point: {process.communicate()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    time.sleep(delay)
    process.send_signal(sig)


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in records]  # clocks only


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNS)
def test_killed_and_resumed_runs_equal_one_uninterrupted_run(command, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("\n".join(RUNS[command]) + "\n")
    whole = _start(command, config, tmp_path / "whole", resume=False)
    rng = random.Random(6)  # seeded kill points: after row 1 and row 3, plus a random fraction of a step
    cut = tmp_path / "cut"
    for sig, rows in zip(KILLS, (1, 3), strict=True):
        process = _start(command, config, cut, resume=(cut / "last.safetensors").exists())
        _kill_after(process, cut, rows, rng.uniform(0.0, 0.25), sig)
        _, stderr = process.communicate(timeout=120)
        if sig == signal.SIGKILL:
            assert process.returncode == -signal.SIGKILL
        else:  # SIGINT: a clean stop, one line saying what is saved and how to go on
            assert process.returncode == 130 and "Traceback" not in stderr, stderr
            assert len(stderr.strip().splitlines()) == 1 and "continue with the same options and --resume" in stderr
        load_checkpoint(cut / "last.safetensors")  # whatever was on disk at the kill is a whole checkpoint
    final = _start(command, config, cut, resume=True)
    assert final.wait(timeout=240) == 0, final.communicate()
    assert whole.wait(timeout=240) == 0, whole.communicate()
    a, b = load_checkpoint(tmp_path / "whole" / "last.safetensors"), load_checkpoint(cut / "last.safetensors")
    for group in ("model", "optim", "rng"):
        left, right = getattr(a, group), getattr(b, group)
        assert left.keys() == right.keys(), group
        for name in left:
            assert torch.equal(left[name], right[name]), f"{group}.{name}"
    assert _strip(read_jsonl(tmp_path / "whole" / "metrics.jsonl")) == _strip(read_jsonl(cut / "metrics.jsonl"))
    assert len(read_jsonl(cut / "metrics.jsonl")) == 6
    assert not [p.name for p in cut.iterdir() if p.name.startswith(".")]  # a killed writer's temporaries are gone
