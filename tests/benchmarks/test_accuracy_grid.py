"""The accuracy grid runs end to end at CPU size (train → export → device-runtime evaluation → reports)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from accuracy_grid import best_per_cell, markdown  # noqa: E402


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("grid")
    result = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--json", "--out", str(out),
                             "--methods", "transfer,protonet,joint-maml", "--jobs", "2"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), out


def test_every_method_is_evaluated_through_the_device_runtime_on_every_cell(grid):
    report, out = grid
    assert list(report["methods"]) == ["transfer", "protonet", "joint-maml"]
    for method, cells in report["methods"].items():
        assert set(cells) == {"5-way 1-shot", "5-way 5-shot"}, method
        for cell in cells.values():
            assert 0.0 <= cell["accuracy"] <= 1.0 and cell["ci95"] >= 0 and cell["episodes"] == 20
        assert (out / "bundles" / f"{method}.mtlb").is_file()
    manifest_algorithms = {json.loads(__import__("zipfile").ZipFile(out / "bundles" / f"{m}.mtlb")
                                      .read("manifest.json"))["producer"]["algorithm"] for m in report["methods"]}
    assert manifest_algorithms == {"pretrain", "protonet", "joint"}


def test_meta_methods_get_the_transfer_runs_cpu_time_and_a_rerun_reuses_every_cell(grid):
    report, out = grid
    transfer = report["trained"]["transfer"]["cpu_seconds"]
    assert transfer > 0
    for method in ("protonet", "joint-maml"):
        assert report["trained"][method]["cpu_budget"] == transfer
    again = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--json", "--out", str(out),
                            "--methods", "transfer,protonet,joint-maml"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "-shot" not in again.stderr  # no cell evaluated twice: every one came from OUT/cells
    assert json.loads(again.stdout)["methods"] == report["methods"]


def test_a_run_cut_short_is_trained_again_not_trusted(grid, tmp_path):
    """A run directory without its record (killed while training or calibrating) is trained afresh."""
    import shutil

    _, out = grid
    cut = tmp_path / "grid"
    shutil.copytree(out / "runs" / "transfer", cut / "runs" / "transfer")
    shutil.copytree(out / "cells" / "transfer", cut / "cells" / "transfer")  # the retrained bundle is the same
    (cut / "runs" / "transfer" / "grid_run.json").unlink()
    result = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--json", "--out", str(cut),
                             "--methods", "transfer"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interrupted" in result.stderr and (cut / "runs" / "transfer" / "grid_run.json").is_file()


def test_a_run_calibrated_on_other_episodes_is_recalibrated_not_retrained(grid, tmp_path):
    """Another --calibrate-episodes recalibrates the trained weights (the same training record), re-exports the
    bundle and re-measures its cells; going back to 0 takes the calibration out again."""
    import shutil

    from mtl.pipeline.train.checkpoint import load_checkpoint

    report, out = grid
    cut = tmp_path / "grid"
    shutil.copytree(out / "runs" / "transfer", cut / "runs" / "transfer")
    trained = (cut / "runs" / "transfer" / "last.safetensors").read_bytes()
    assert "device" not in load_checkpoint(cut / "runs" / "transfer").meta  # --quick: no calibration

    def rerun(episodes):
        result = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--json", "--out", str(cut),
                                 "--methods", "transfer", "--calibrate-episodes", str(episodes)], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout), result.stderr

    again, log = rerun(5)
    assert "calibrating it again" in log and "interrupted" not in log
    assert again["trained"]["transfer"]["calibrate_episodes"] == 5
    assert again["trained"]["transfer"]["cpu_seconds"] == report["trained"]["transfer"]["cpu_seconds"]
    assert (cut / "runs" / "transfer" / "last.safetensors").read_bytes() == trained  # not trained again
    assert load_checkpoint(cut / "runs" / "transfer").meta["device"]["steps"] >= 0
    from mtl.device_runtime import Bundle

    assert Bundle.load(cut / "bundles" / "transfer.mtlb").manifest.calibration is not None  # the re-exported one
    back, _ = rerun(0)
    assert back["trained"]["transfer"]["calibrate_episodes"] == 0
    assert "device" not in load_checkpoint(cut / "runs" / "transfer").meta


def test_a_grid_is_finished_from_an_earlier_report_without_training_its_methods_again(grid, tmp_path):
    """--reuse: the methods an earlier report measured on every cell, same data, budget, episodes and seed, are
    taken as they stand (their bundles' sha256 with them); another budget takes nothing; a bad file is one line."""
    import dataclasses

    from accuracy_grid import Budget, reusable

    report, out = grid
    fresh = tmp_path / "later"
    result = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--json", "--out", str(fresh),
                             "--methods", "transfer,protonet,joint-maml", "--reuse", str(out / "grid.json")],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    later = json.loads(result.stdout)
    assert later["methods"] == report["methods"] and later["trained"] == report["trained"]
    assert set(later["reused"]) == {"transfer", "protonet", "joint-maml"} and not (fresh / "runs").exists()
    assert all(len(cell["bundle_sha256"]) == 64 for cells in later["methods"].values() for cell in cells.values())
    budget = Budget(**{**report["budget"], "split": tuple(report["budget"]["split"])})
    cells = ((5,), (1, 5), 20, 0)
    assert set(reusable([out / "grid.json"], report["data"], budget, *cells)) == {"transfer", "protonet", "joint-maml"}
    assert reusable([out / "grid.json"], report["data"], dataclasses.replace(budget, meta_batch=3), *cells) == {}
    assert reusable([out / "grid.json"], report["data"], budget, (5,), (1, 5), 20, 1) == {}  # another seed
    assert set(reusable([out / "grid.json"], report["data"], budget, (5,), (1,), 20, 0)) == set(report["methods"])
    assert reusable([out / "grid.json"], report["data"], budget, (5, 20), (1,), 20, 0) == {}  # a cell not measured
    (tmp_path / "bad.json").write_text("{not json")
    bad = subprocess.run([sys.executable, "benchmarks/accuracy_grid.py", "--quick", "--out", str(fresh),
                          "--reuse", str(tmp_path / "bad.json")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "bad.json: unreadable" in bad.stderr


def test_the_best_method_per_cell_is_the_highest_mean_and_the_reports_are_written(grid):
    report, out = grid
    for cell, best in report["best"].items():
        scores = {m: r[cell]["accuracy"] for m, r in report["methods"].items()}
        assert scores[best["best"]] == max(scores.values())
    assert json.loads((out / "grid.json").read_text()) == report
    assert "**" in (out / "grid.md").read_text()
    with Image.open(out / "grid.png") as image:
        assert image.size[0] > 100 and len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn, not blank


def test_ties_within_the_confidence_interval_are_marked():
    methods = {"a": {"5-way 1-shot": {"accuracy": 0.90, "ci95": 0.01}},
               "b": {"5-way 1-shot": {"accuracy": 0.885, "ci95": 0.01}},
               "c": {"5-way 1-shot": {"accuracy": 0.70, "ci95": 0.01}, "35-way 1-shot": {"skipped": "too few"}}}
    best = best_per_cell(methods)
    assert best == {"5-way 1-shot": {"best": "a", "within_ci": ["b"]}}
    table = markdown({"data": "d", "episodes": 1, "seed": 0, "methods": methods, "best": best})
    assert "**90.00 ± 1.00**" in table and "88.50 ± 1.00 *" in table and "70.00 ± 1.00 |" in table
    trained = {"a": {"cpu_seconds": 468.6, "epoch": 30}, "b": {"cpu_seconds": 539.2, "iteration": 15}}
    table = markdown({"data": "d", "episodes": 1, "seed": 0, "methods": methods, "best": best, "trained": trained})
    assert table.splitlines()[-1] == "| trained for | 468.6 CPU-s, 30 epochs | 539.2 CPU-s, 15 iterations | n/a |"


def test_the_grid_takes_its_methods_from_the_registry():
    from accuracy_grid import methods

    from mtl.pipeline.algorithms import algorithm_names, get_algorithm

    table = methods()
    assert next(iter(table)) == "transfer"
    for name in algorithm_names():
        variants = [m for m, (algorithm, _) in table.items() if algorithm == name]
        assert len(variants) == len(get_algorithm(name).recipes), name
