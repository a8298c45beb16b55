"""The recipe beside a plain Prototypical Network trained for the same CPU time, on the same split.

Snell et al. 2017's Omniglot setting: Conv-4 (64 filters), 60-way 1-shot training episodes with 5 queries per
class, Adam at 1e-3, rotations as new classes, no pretraining — `mtl meta-train --algorithm protonet`, stopped
by `--max-seconds` at the recipe's training time (pretrain + meta-train, read from RECIPE_DIR/timing.json).
Both bundles are evaluated through the device runtime on the same seeded episodes of the test alphabet, so
the comparison is paired: per cell, the mean difference of per-episode accuracies with its 95% CI.

Usage: .venv/bin/python benchmarks/protonet_baseline.py RECIPE_DIR [--out DIR] [--seconds S] [--episodes 600]
       (RECIPE_DIR: what benchmarks/omniglot_recipe.sh wrote). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

CELLS = ((5, 1), (20, 1), (20, 5))


def mtl(*args: str) -> None:
    """Run `mtl ARGS`; its output goes to stderr, so stdout is the report's JSON alone."""
    subprocess.run([sys.executable, "-m", "mtl", *args], check=True, stdout=sys.stderr)


def train_baseline(recipe: dict[str, Any], out: Path, seconds: float) -> float:
    """ProtoNet on the recipe's data and split for `seconds`; returns the wall-clock seconds it took."""
    run = out / "protonet"
    start = time.perf_counter()
    if not (run / "best.safetensors").is_file():
        mtl("meta-train", "--data", recipe["data"], "--algorithm", "protonet", "--backbone", "conv4",
            "--ways", "60", "--shots", "1", "--queries", "5", "--meta-batch", "1", "--outer-lr", "1e-3",
            "--iterations", "1000000", "--max-seconds", str(seconds), "--val-every", "500", "--rotations",
            "--split", recipe["split"], "--split-by", recipe["split_by"], "--out", str(run), "-q")
    took = time.perf_counter() - start
    mtl("export", str(run), "--out", str(out / "protonet.mtlb"), "--single-file")
    return took


def evaluate(bundle: Path, ways: int, shots: int, episodes: int) -> dict[str, Any]:
    from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path

    result = evaluate_path(bundle, None, EvalConfig(ways, shots, 15, episodes)).result
    return {"accuracy": result.mean, "ci95": result.ci95, "ece": result.ece, "per_episode": list(result.per_episode)}


def compare(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    import torch

    from mtl.pipeline.train.common import mean_ci95

    diff, ci = mean_ci95(torch.tensor(ours["per_episode"], dtype=torch.float64)
                         - torch.tensor(base["per_episode"], dtype=torch.float64))
    return {"recipe": round(ours["accuracy"], 5), "recipe_ci95": round(ours["ci95"], 5),
            "protonet": round(base["accuracy"], 5), "protonet_ci95": round(base["ci95"], 5),
            "recipe_ece": round(ours["ece"], 4), "protonet_ece": round(base["ece"], 4),
            "difference": round(diff, 5), "difference_ci95": round(ci, 5),
            "ratio": round(ours["accuracy"] / base["accuracy"], 4),
            # the bar: ahead by more than the CI (of either figure, and of the paired difference)
            "recipe_wins": bool(diff - ci > 0 and diff > max(ours["ci95"], base["ci95"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where the baseline goes (default RECIPE_DIR/baseline)")
    parser.add_argument("--seconds", type=float, default=None, help="training budget (default: the recipe's)")
    parser.add_argument("--episodes", type=int, default=600)
    args = parser.parse_args(argv)
    recipe = json.loads((args.recipe_dir / "timing.json").read_text())
    seconds = args.seconds or recipe["training_seconds"]
    out = args.out or args.recipe_dir / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    took = train_baseline(recipe, out, seconds)
    report: dict[str, Any] = {"benchmark": "protonet_baseline", "data": recipe["data"], "split": recipe["split"],
                              "split_by": recipe["split_by"], "episodes": args.episodes,
                              "recipe_training_seconds": recipe["training_seconds"],
                              "protonet_training_seconds": round(took, 1), "cells": {}}
    for ways, shots in CELLS:
        ours = evaluate(args.recipe_dir / "bundle.mtlb", ways, shots, args.episodes)
        base = evaluate(out / "protonet.mtlb", ways, shots, args.episodes)
        report["cells"][f"{ways}-way {shots}-shot"] = compare(ours, base)
    report["recipe_wins_every_cell"] = all(c["recipe_wins"] for c in report["cells"].values())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
