"""The meta-training throughput benchmark runs end to end at CPU size (`--quick --json`).

Only the report's shape, positive numbers and the gradient check are tested: the speed targets are what
the full (CUDA) benchmark is for, never a test's pass condition.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> dict:
    result = subprocess.run([sys.executable, "benchmarks/meta_train_throughput.py", "--quick", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_run_times_the_loop_beside_the_vmapped_engine_on_one_second_order_workload(report):
    assert report["settings"]["quick"] is True
    [workload] = report["workloads"]
    assert workload["workload"]["algorithm"] == "maml" and workload["workload"]["backbone"] == "conv4"
    on_cuda = report["settings"]["device"] == "cuda"
    cuda_only = {"vmap+compile", "vmap+compile+bf16", "vmap+compile+bf16+cudagraphs"}
    assert set(workload["variants"]) == {"loop", "vmap"} | (cuda_only if on_cuda else set())
    for name, side in workload["variants"].items():
        assert positive(side["tasks_per_s"]) and positive(side["step_ms"]), name
        assert positive(side["peak_mb"]) if on_cuda else side["peak_mb"] is None
        if name != "loop":
            assert positive(side["speedup"]), name


def test_the_engine_computes_the_loops_meta_gradient(report):
    [workload] = report["workloads"]
    check = workload["gradient_check"]["vmap"]
    assert check["match"] is True and check["relative_error"] <= 1e-4
    assert report["all_gradients_match"] is True
