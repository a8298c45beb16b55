"""How the recipe's accuracy grows with the number of training characters — and how many it would need.

The recipe's first stage (`benchmarks/omniglot_recipe.sh`'s teacher: the same `mtl pretrain` settings, 30 epochs)
is trained on nested, seeded subsets of the training characters (`mtl pretrain --train-classes N`: validation and
test characters unchanged), each exported and evaluated through the device runtime on the same seeded episodes of
the held-out test alphabet at 0 adaptation steps (nearest normalised centroid), so the points differ only in N.
Per cell, a power law error = c · N^(−b) is fitted to the points by least squares in log–log, and solved for the
characters that would reach the issue's targets: an extrapolation, reported as such (`characters_needed`, and
the same from the fits that leave one point out, which shows how far a single run's ~1 pp spread moves it).

Usage: .venv/bin/python benchmarks/data_scaling.py OUT_DIR [--classes 21,43,86,128,171] [--episodes 600]
       [--epochs 30] [--data SPEC] [--split F,F,F --split-by HOW] [--plot PNG]. Prints JSON (also
       OUT_DIR/report.json); a size whose run is finished is not trained again.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

# The recipe's teacher stage, as benchmarks/omniglot_recipe.sh writes it (a test holds the two together).
RECIPE = ("--backbone", "conv4", "--backbone-option", "width=[64,64,128,256]", "--rotations", "--augment-rotate",
          "15", "--augment-scale", "0.15", "--augment-shear", "0.3", "--augment-elastic", "0.06",
          "--calibrate-episodes", "0")
TARGETS = {(5, 1): 0.97, (20, 1): 0.90, (20, 5): 0.97}  # issue 15's, on the test alphabet


def mtl(*args: str) -> None:
    """Run `mtl ARGS`; its output goes to stderr, so stdout is the report's JSON alone."""
    subprocess.run([sys.executable, "-m", "mtl", *args], check=True, stdout=sys.stderr)


def train(out: Path, n: int, args: argparse.Namespace) -> None:
    """The recipe's teacher on `n` training characters into `out` (resumed if cut, left as it is if finished)."""
    resume = ("--resume",) if (out / "last.safetensors").is_file() else ()
    mtl("pretrain", "--data", args.data, *RECIPE, "--epochs", str(args.epochs), "--split", args.split,
        "--split-by", args.split_by, "--train-classes", str(n), "--out", str(out), *resume, "-q")
    mtl("export", str(out), "--out", str(out / "bundle.mtlb"), "--single-file")


def evaluate(bundle: Path, ways: int, shots: int, episodes: int) -> dict[str, Any]:
    """Nearest normalised centroid (0 steps) through the device runtime on the seeded test episodes."""
    from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path

    result = evaluate_path(bundle, None, EvalConfig(ways, shots, 15, episodes), steps=0).result
    return {"accuracy": result.mean, "ci95": result.ci95}


def power_law(sizes: list[int], accuracies: list[float]) -> dict[str, Any]:
    """Least squares of log(error) on log(N) (numpy.polyfit): error ≈ c · N^(−b), and its R²."""
    import numpy as np

    xs, ys = np.log(np.asarray(sizes, float)), np.log(np.maximum(1 - np.asarray(accuracies, float), 1e-9))
    slope, intercept = np.polyfit(xs, ys, 1)
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1 - float(((ys - (intercept + slope * xs)) ** 2).sum()) / ss_tot if ss_tot else None
    return {"c": math.exp(intercept), "b": -float(slope), "r2": r2, "intercept": float(intercept),
            "slope": float(slope)}


def needed(fit: dict[str, Any], target: float) -> float | None:
    """N at which the fitted error reaches 1 − target; None when the fit does not fall with N."""
    if fit["slope"] >= 0:
        return None
    return math.exp((math.log(1 - target) - fit["intercept"]) / fit["slope"])


OMNIGLOT_CHARACTERS = 1623  # every character of Omniglot's 50 alphabets: the most any Omniglot recipe can train on


def plot(report: dict[str, Any], path: Path) -> None:
    """Accuracy against training characters (log axis) per cell, with its CI, the fitted power law drawn out to
    all of Omniglot's characters (or a target's N, if larger), and the targets."""
    from matplotlib.figure import Figure

    from mtl.pipeline.atomic import atomic_write_bytes
    from mtl.pipeline.report.plots import png

    figure = Figure(figsize=(7.0, 4.5), dpi=100, layout="constrained")
    ax = figure.subplots()
    sizes = [p["train_characters"] for p in report["points"]]
    for i, (key, fit) in enumerate(report["power_law"].items()):
        colour = f"C{i}"
        ax.errorbar(sizes, [100 * p[key]["accuracy"] for p in report["points"]],
                    yerr=[100 * p[key]["ci95"] for p in report["points"]], fmt="o", color=colour, capsize=3,
                    label=f"{key.replace('w', '-way ').replace('s', '-shot')}: error ∝ $N^{{-{fit['b']:.2f}}}$")
        reach = max(OMNIGLOT_CHARACTERS, fit["characters_needed"] or 0)
        grid = [sizes[0] * (reach / sizes[0]) ** (t / 99) for t in range(100)]
        ax.plot(grid, [100 * (1 - fit["c"] * n ** -fit["b"]) for n in grid], color=colour, alpha=0.6, lw=1)
        if fit["target"] is not None:
            ax.axhline(100 * fit["target"], color=colour, ls=":", lw=1)
    ax.axvline(sizes[-1], color="grey", ls="--", lw=1)
    ax.axvline(OMNIGLOT_CHARACTERS, color="black", ls="--", lw=1)
    ax.text(OMNIGLOT_CHARACTERS, ax.get_ylim()[1], "all of Omniglot ", rotation=90, ha="right", va="top",
            fontsize="small")
    ax.text(sizes[-1], ax.get_ylim()[1], "trained here ", rotation=90, ha="right", va="top", fontsize="small")
    ax.set_xscale("log")
    ax.set_xlabel("training characters (log scale; dotted: the targets)")
    ax.set_ylabel("test-alphabet accuracy, % (device runtime, 0 steps)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="lower right")
    atomic_write_bytes(path, png(figure))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", default="21,43,86,128,171", help="training-character counts, comma-separated")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--data", default="omniglot:../shared/data/omniglot")
    parser.add_argument("--split", default="0.7,0.1,0.2")
    parser.add_argument("--split-by", default="superclass-test")
    parser.add_argument("--cells", default="5x1,20x1,20x5", help="ways x shots, comma-separated")
    parser.add_argument("--plot", type=Path, help="also draw the points and fits into this PNG")
    args = parser.parse_args(argv)
    from mtl.pipeline.atomic import atomic_write_text, read_jsonl

    sizes = sorted({int(n) for n in args.classes.split(",")})
    cells = [tuple(int(v) for v in cell.split("x")) for cell in args.cells.split(",")]
    if len(sizes) < 2:
        parser.error("--classes needs at least two sizes to fit a curve")
    args.out.mkdir(parents=True, exist_ok=True)
    points = []
    for n in sizes:
        run = args.out / f"n{n}"
        train(run, n, args)
        epochs = read_jsonl(run / "metrics.jsonl")  # its epochs' seconds (validation included), however resumed
        point: dict[str, Any] = {"train_characters": n, "train_seconds": round(sum(e["seconds"] for e in epochs), 1),
                                 "val_accuracy": max(e["val_acc"] for e in epochs)}
        for ways, shots in cells:
            point[f"{ways}w{shots}s"] = evaluate(run / "bundle.mtlb", ways, shots, args.episodes)
        points.append(point)
        print(json.dumps(point), file=sys.stderr)
    fits = {}
    for ways, shots in cells:
        key = f"{ways}w{shots}s"
        fit = power_law(sizes, [p[key]["accuracy"] for p in points])
        target = TARGETS.get((ways, shots))
        fits[key] = {**{k: fit[k] for k in ("c", "b", "r2")}, "target": target,
                     "characters_needed": None if target is None else needed(fit, target)}
        if target is not None and len(sizes) > 2:  # how much one point moves it: the fits leaving each one out
            loo = [needed(power_law(sizes[:i] + sizes[i + 1:], [p[key]["accuracy"] for j, p in enumerate(points)
                                                                 if j != i]), target) for i in range(len(sizes))]
            fits[key]["characters_needed_leave_one_out"] = [None if n is None else round(n) for n in loo]
    report = {"benchmark": "data_scaling", "data": args.data, "split": args.split, "split_by": args.split_by,
              "epochs": args.epochs, "episodes": args.episodes, "stage": list(RECIPE), "steps": 0,
              "points": points, "power_law": fits}
    text = json.dumps(report, indent=2)
    atomic_write_text(args.out / "report.json", text + "\n")
    if args.plot:
        plot(report, args.plot)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
