"""The on-device adaptation benchmark runs end to end (`--quick --json`) and reports every field.

Only the shape of the report and that its numbers are positive are checked: the targets are what the
full benchmark is for, never a test's pass condition.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mtl.device_runtime.schema import GRAPH_NAMES

REPO = Path(__file__).resolve().parents[2]
TIMES = ("load_ms", "first_run_ms", "preprocess_ms", "embed_ms", "adapt_step_ms", "end_to_end_ms", "predict_ms")


@pytest.fixture(scope="module")
def report() -> dict:
    result = subprocess.run([sys.executable, "benchmarks/device_adapt.py", "--quick", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_run_measures_one_tiny_conv4_workload(report):
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] == 1
    [workload] = report["workloads"]
    settings = workload["workload"]
    assert (settings["backbone"], settings["size"], settings["ways"], settings["shots"], settings["steps"]) \
        == ("conv4", 28, 5, 2, 2)
    assert settings["images"] == "synthetic" and report["settings"]["images"] == {workload["name"]: "synthetic"}


def test_both_sides_report_positive_times_and_peak_rss(report):
    [workload] = report["workloads"]
    for side in ("ours", "ours_int8", "baseline"):
        for key in (*TIMES, "peak_rss_mb"):
            assert positive(workload[side][key]), f"{side}.{key} = {workload[side][key]!r}"
        # one device pass (load, adapt, predict) never exceeds the peak after every repeated load
        assert workload[side]["peak_rss_mb"] <= workload[side]["peak_rss_mb_all_runs"], side
    assert workload["ours"]["torch_imported"] is False and workload["ours_int8"]["torch_imported"] is False
    assert workload["ours"]["threads"]["onnxruntime_intra_op"] == 1
    assert workload["baseline"]["threads"]["torch_intra_op"] == 1


def test_speedups_and_bundle_sizes_are_reported(report):
    [workload] = report["workloads"]
    for speedup in ("speedup", "speedup_int8"):
        assert all(positive(workload[speedup][key.removesuffix("_ms")]) for key in TIMES)
    for kind, bundle in workload["bundle"].items():
        assert set(bundle["files"]) == {"manifest.json", "init.npz", *(f"{g}.onnx" for g in GRAPH_NAMES)}
        assert all(positive(size) for size in bundle["files"].values())
        assert bundle["total_bytes"] == sum(bundle["files"].values()) and positive(bundle["mtlb_bytes"]), kind
    assert workload["bundle"]["int8"]["files"]["embed.onnx"] < workload["bundle"]["float"]["files"]["embed.onnx"]


def test_every_side_computes_the_same_adaptation(report):
    [workload] = report["workloads"]
    for key in ("loss_before", "final_loss"):
        ours, int8, baseline = workload["check"][key]
        assert positive(ours) and ours == pytest.approx(baseline, rel=1e-3), key
        assert int8 == pytest.approx(baseline, rel=0.1), key  # int8 features: close, not equal
    assert workload["check"]["predictions_agree_with_baseline"]["float"] >= 0.9  # a near-tie may flip elsewhere


def test_targets_are_reported_as_booleans(report):
    [workload] = report["workloads"]
    assert set(workload["targets"]) == {f"{target}_{kind}" for kind in ("float", "int8") for target in
                                        ("end_to_end_3x_faster", "device_peak_rss_le_120mb", "bundle_le_1mb")}
    assert set(report["targets"]) == {"float", "int8"}
    flags = [*workload["targets"].values(), *(v for t in report["targets"].values() for v in t.values())]
    assert all(isinstance(met, bool) for met in flags)
