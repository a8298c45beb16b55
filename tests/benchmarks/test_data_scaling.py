"""benchmarks/data_scaling.py: the recipe's teacher stage on nested subsets of the training classes, evaluated through
the device runtime, with a power law fitted to the points and solved for the targets."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from data_scaling import RECIPE, needed, power_law  # noqa: E402


def test_the_stage_trained_is_the_recipes_teacher_as_the_script_writes_it():
    script = (REPO / "benchmarks" / "omniglot_recipe.sh").read_text()
    block = re.search(r"^RECIPE=\((.*?)\)$", script, re.S | re.M).group(1)
    words = [w.strip("'\"") for w in block.split()]
    fixed = [w for w in words if not w.startswith("$") and w not in ("--data", "--epochs")]  # set per run
    teacher = re.search(r'stage "\$OUT/teacher" (.*)$', script, re.M).group(1).split()
    assert list(RECIPE) == fixed + teacher  # the same flags, in the same order
    assert re.search(r"EPOCHS=\$\{EPOCHS:-30\}", script) and '--split 0.7,0.1,0.2 --split-by superclass-test' in script


def test_the_power_law_is_recovered_and_solved_for_a_target():
    sizes = [10, 20, 40, 80]
    accuracies = [1 - 0.5 * n ** -0.4 for n in sizes]
    fit = power_law(sizes, accuracies)
    assert fit["c"] == pytest.approx(0.5, rel=1e-9) and fit["b"] == pytest.approx(0.4, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert needed(fit, 0.9) == pytest.approx((0.1 / 0.5) ** (-1 / 0.4), rel=1e-9)  # 55.9 characters
    moved = [needed(power_law(sizes[:i] + sizes[i + 1:], accuracies[:i] + accuracies[i + 1:]), 0.9) for i in range(4)]
    assert moved == pytest.approx([55.9] * 4, rel=1e-3)  # exact points: every leave-one-out fit agrees
    flat = power_law(sizes, [0.8, 0.79, 0.8, 0.78])
    assert needed(flat, 0.9) is None  # error does not fall with N: no N reaches the target


def test_the_benchmark_trains_each_size_evaluates_it_and_fits(tmp_path):
    out = tmp_path / "scaling"
    cmd = [sys.executable, "benchmarks/data_scaling.py", str(out), "--classes", "4,8,16", "--epochs", "1",
           "--episodes", "10", "--data", "synthetic:60", "--split", "0.6,0.2,0.2", "--split-by", "class",
           "--cells", "5x1", "--plot", str(tmp_path / "scaling.png")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")
    assert [p["train_characters"] for p in report["points"]] == [4, 8, 16]
    for point in report["points"]:
        n = point["train_characters"]
        assert len(json.loads((out / f"n{n}" / "splits.json").read_text())["train"]) == n
        assert 0 < point["5w1s"]["accuracy"] <= 1 and point["5w1s"]["ci95"] > 0
    fit = report["power_law"]["5w1s"]
    assert fit["target"] == 0.97 and math.isfinite(fit["b"])
    assert len(fit["characters_needed_leave_one_out"]) == 3  # one fit without each point
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)  # finished: not retrained
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p["5w1s"] for p in json.loads(again.stdout)["points"]] == [p["5w1s"] for p in report["points"]]
