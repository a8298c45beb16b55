"""Few-shot accuracy of every method over a way × shot grid, measured THROUGH THE DEVICE RUNTIME.

Eshratifar et al. (AAAI 2019, Table 1) found meta-learning ahead at few ways and shots, transfer
learning ahead at many, and joint meta-transfer ahead of both. This benchmark builds that table for
mtl's own methods on one data source:

- transfer: `mtl pretrain`, exported, the head initialised from prototypes and fine-tuned on device;
- every registered algorithm (`pipeline.algorithms`), in each of its recipes (`Algorithm.recipes`, e.g.
  joint-maml and joint-reptile of Eshratifar et al.): `mtl meta-train`, same data, backbone and budget for each
  (a method that needs a pretrained extractor, MTL, starts from the transfer run's);
- every model is exported (`--adapt head`: the device adapts the head) and every cell evaluated by
  `mtl evaluate BUNDLE` — onnxruntime, not PyTorch — on the test classes of the one shared split,
  with the same seeded episodes for every method (mean ± 95% CI).

Writes OUT/runs/* (trained once: an existing run or bundle is reused), OUT/grid.json, OUT/grid.md
(best method per cell in bold, * within the CI of the best) and OUT/grid.png (heat map, best boxed),
then prints the JSON. Every measured cell carries the sha256 of the bundle it was measured on.

A grid too long for one sitting is finished in several: `--reuse REPORT` (an earlier grid.json, or the copy
kept in benchmarks/results/) takes every method that report measured on every requested cell — with the same
data, budget, episodes and seed — as it stands, and trains and measures only the others. Give the budget
explicitly then (`--cpu-seconds`), so that the methods trained now get the CPU time the earlier ones had.

Run (GPU): .venv/bin/python benchmarks/accuracy_grid.py --data omniglot:../shared/data/omniglot --json
      CPU smoke: --quick (synthetic data, three methods, 5-way × 1/5-shot, tiny budgets, no calibration).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))



def methods() -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Grid method name → (algorithm, meta-train settings): "transfer", then every algorithm of the registry in
    each of its recipes (name, or name-suffix)."""
    from mtl.pipeline.algorithms import algorithm_names, get_algorithm

    table: dict[str, tuple[str | None, dict[str, Any]]] = {"transfer": (None, {})}
    for name in algorithm_names():
        for suffix, recipe in get_algorithm(name).recipes.items():
            table[f"{name}-{suffix}" if suffix else name] = (name, recipe)
    return table


DRAWINGS = 20  # Omniglot: 20 drawings per character, so 15 shots leave 5 queries


@dataclasses.dataclass(frozen=True)
class Budget:
    """The one training budget every method gets."""

    backbone: str = "conv4"
    pretrain_epochs: int = 20
    iterations: int = 2000
    meta_batch: int = 16
    ways: int = 5
    shots: int = 1
    queries: int = 15
    inner_steps: int = 5
    inner_lr: float = 0.4
    rotations: bool = True
    device: str = "auto"
    val_every: int = 200
    val_episodes: int = 100
    calibrate_episodes: int = 200  # per cell, on the validation classes (pipeline.train.calibrate)
    seconds: float | None = None  # meta-training wall-clock budget per method (iterations is then a cap)
    cpu_seconds: float | None = None  # ... or CPU-time budget; default (neither given): the transfer run's CPU time
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_by: str = "auto"


def train(method: str, data: str, budget: Budget, runs: Path) -> Path:
    """Train `method` into runs/<method> unless it is already there; returns the run directory. Each run records
    its training time (`grid_run.json`: CPU seconds of this process, every thread, and wall seconds; calibration
    not counted, its wall seconds and episodes per cell recorded beside)."""
    from mtl.pipeline.atomic import atomic_write_text
    from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
    from mtl.pipeline.train.pretrain import PretrainConfig, pretrain

    out = runs / method
    if (out / RUN_RECORD).is_file():  # written last, atomically: the run is complete
        spent = json.loads((out / RUN_RECORD).read_text())
        if spent.get("calibrate_episodes", Budget.calibrate_episodes) != budget.calibrate_episodes:
            log(f"{method}: calibrated on {spent.get('calibrate_episodes', Budget.calibrate_episodes)} episodes per "
                f"cell, not {budget.calibrate_episodes}; calibrating it again")
            _calibrate(out, budget, spent)
            atomic_write_text(out / RUN_RECORD, json.dumps(spent) + "\n")
        return out
    if out.exists():  # cut short (killed while training or calibrating): its CPU time is unknown, so start over
        log(f"{method}: {out} has no {RUN_RECORD} (interrupted); training it again")
        shutil.rmtree(out)
    if method == "transfer":
        began, began_cpu = time.perf_counter(), time.process_time()
        pretrain(PretrainConfig(data=data, out=str(out), backbone=budget.backbone, epochs=budget.pretrain_epochs,
                                rotations=budget.rotations, device=budget.device, val_episodes=budget.val_episodes,
                                split=budget.split, split_by=budget.split_by, calibrate_episodes=0))
        spent = {"cpu_seconds": round(time.process_time() - began_cpu, 1),
                 "wall_seconds": round(time.perf_counter() - began, 1)}
    else:
        from mtl.pipeline.algorithms import get_algorithm

        algorithm, recipe = methods()[method]
        options = {"inner_lr": budget.inner_lr, "algorithm": algorithm, **recipe}
        if get_algorithm(algorithm).needs_init:
            options["init"] = str(train("transfer", data, budget, runs))
        limit = cpu_budget(budget, data, runs)
        began, began_cpu = time.perf_counter(), time.process_time()
        meta_train(MetaTrainConfig(data=data, out=str(out), backbone=budget.backbone, ways=budget.ways,
                                   shots=budget.shots, queries=budget.queries, meta_batch=budget.meta_batch,
                                   inner_steps=budget.inner_steps, iterations=budget.iterations,
                                   rotations=budget.rotations, device=budget.device,
                                   val_every=min(budget.val_every, budget.iterations),
                                   val_episodes=budget.val_episodes, max_seconds=budget.seconds,
                                   max_cpu_seconds=limit, split=budget.split,
                                   split_by=budget.split_by, calibrate_episodes=0, **options))
        spent = {"cpu_seconds": round(time.process_time() - began_cpu, 1),
                 "wall_seconds": round(time.perf_counter() - began, 1), "cpu_budget": limit}
    _calibrate(out, budget, spent)
    atomic_write_text(out / RUN_RECORD, json.dumps(spent) + "\n")
    return out


def _calibrate(run: Path, budget: Budget, spent: dict[str, Any]) -> None:
    """The run's closing `mtl calibrate` at the budget's episodes per cell (from the trained weights: an earlier
    calibration is replaced), noted in `spent`."""
    from mtl.pipeline.train.calibrate import calibrate_checkpoint
    from mtl.pipeline.train.checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint

    began = time.perf_counter()
    if budget.calibrate_episodes:
        calibrate_checkpoint(run, budget.calibrate_episodes, 0, budget.device)
    else:  # none: the device settings as trained (an earlier calibration taken out)
        file = resolve_checkpoint_path(run)
        ckpt = load_checkpoint(file)
        if "device" in ckpt.meta:
            meta = {k: v for k, v in ckpt.meta.items() if k != "device"}
            save_checkpoint(file, dataclasses.replace(ckpt, meta=meta, device={}))
    spent["calibration_wall_seconds"] = round(time.perf_counter() - began, 1)
    spent["calibrate_episodes"] = budget.calibrate_episodes


RUN_RECORD = "grid_run.json"


def cpu_budget(budget: Budget, data: str, runs: Path) -> float | None:
    """Every meta-trained method's CPU-time budget: `budget.cpu_seconds`, or else what the transfer run's
    pretraining took (training it first), so that every method gets the same CPU time. None with a wall budget."""
    if budget.cpu_seconds is not None or budget.seconds is not None:
        return budget.cpu_seconds
    return float(json.loads((train("transfer", data, budget, runs) / RUN_RECORD).read_text())["cpu_seconds"])


def export(run: Path, bundles: Path) -> Path:
    """The run's bundle (the head adapts on device; an extractor adapted in training ships frozen)."""
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.checkpoint import resolve_checkpoint_path

    path = bundles / f"{run.name}.mtlb"
    if not path.is_file() or path.stat().st_mtime < resolve_checkpoint_path(run).stat().st_mtime:  # recalibrated
        export_bundle(run, path, single_file=True, adapt="head")
    return path


def evaluate_cell(bundle: Path, ways: int, shots: int, queries: int, episodes: int, seed: int) -> dict[str, Any]:
    """One grid cell through the device runtime: accuracy ± 95% CI over the seeded episodes."""
    from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path

    start = time.perf_counter()
    evaluation = evaluate_path(bundle, None, EvalConfig(ways, shots, queries, episodes, seed=seed))
    return {"accuracy": evaluation.result.mean, "ci95": evaluation.result.ci95, "ece": evaluation.result.ece,
            "episodes": episodes, "queries": queries, "classes": evaluation.classes,
            "seconds": round(time.perf_counter() - start, 2)}


def measure_cell(path: Path, identity: dict[str, Any], args: tuple) -> dict[str, Any]:
    """`evaluate_cell(*args)`, kept at `path` (atomically) the moment it is measured — in a worker too, so that an
    interrupted grid loses only the cells still running."""
    from mtl.pipeline.atomic import atomic_write_text

    result = evaluate_cell(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"identity": identity, "result": result}, indent=2) + "\n")
    return result


def cell_cache(out: Path, method: str, key: str) -> Path:
    return out / "cells" / method / (key.replace(" ", "_") + ".json")


def cached_cell(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """A cell measured earlier on the same bundle (sha256), episodes, queries and seed, else None."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["result"] if saved.get("identity") == identity else None


def trained_for(run: Path) -> dict[str, Any]:
    """How long the run trained, from its last metrics record: epochs or iterations, and seconds."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {k: last[k] for k in ("epoch", "iteration", "seconds", "elapsed") if k in last}


def reusable(paths: list[Path], data: str, budget: Budget, ways: tuple[int, ...], shots: tuple[int, ...],
             episodes: int, seed: int) -> dict[str, dict[str, Any]]:
    """The methods earlier grid reports measured on every cell of this grid, with this data, budget, episodes and
    seed: method → {"cells", "trained", "from"} (the first report that has it wins). Raises ValueError for a file
    that is not a readable grid report."""
    ours = json.loads(json.dumps(dataclasses.asdict(budget)))  # tuples → lists, as a report holds them
    wanted = [f"{n}-way {k}-shot" for n in ways for k in shots]
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--reuse {path}: unreadable ({exc})") from None
        if not isinstance(report, dict) or report.get("benchmark") != "accuracy_grid":
            raise ValueError(f"--reuse {path}: not an accuracy_grid report")
        same = {"data": (report.get("data"), data), "budget": (report.get("budget"), ours),
                "episodes": (report.get("episodes"), episodes), "seed": (report.get("seed"), seed)}
        differ = [k for k, (theirs, mine) in same.items() if theirs != mine]
        if differ:
            log(f"--reuse {path}: another {', '.join(differ)}; nothing taken from it")
            continue
        for method, cells in report.get("methods", {}).items():
            complete = all("skipped" in cells.get(key, {}) or "bundle_sha256" in cells.get(key, {}) for key in wanted)
            if method not in found and complete and method in report.get("trained", {}):
                found[method] = {"cells": {key: cells[key] for key in wanted}, "trained": report["trained"][method],
                                 "from": str(path)}
    return found


def test_class_count(bundle: Path) -> int:
    from mtl.device_runtime import Bundle

    return len(Bundle.load(bundle).manifest.producer.get("splits", {}).get("test", []))


def run_grid(data: str, out: Path, budget: Budget, methods: tuple[str, ...], ways: tuple[int, ...],
             shots: tuple[int, ...], episodes: int, seed: int, jobs: int = 1,
             earlier: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train, export and evaluate every method on every cell; the report as a dict. Methods train one after another
    in this process; with `jobs` > 1 the cells are evaluated by that many worker processes meanwhile. Each cell's
    result is kept under OUT/cells, so an interrupted grid resumes where it stopped. A method in `earlier`
    (`reusable`) is taken from there: neither trained nor measured."""
    import hashlib
    from concurrent.futures import Future, ProcessPoolExecutor
    from multiprocessing import get_context

    runs, bundles = out / "runs", out / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "accuracy_grid", "data": data, "budget": dataclasses.asdict(budget),
                              "episodes": episodes, "seed": seed, "methods": {}, "trained": {}, "reused": {}}
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else None
    pending: list[tuple[str, str, Future | None, tuple]] = []
    for method in methods:
        if method in (earlier or {}):
            log(f"{method}: every cell from {earlier[method]['from']}, not trained or measured again")
            report["methods"][method], report["trained"][method] = earlier[method]["cells"], earlier[method]["trained"]
            report["reused"][method] = earlier[method]["from"]
            continue
        run = train(method, data, budget, runs)
        bundle = export(run, bundles)
        report["trained"][method] = {**json.loads((run / RUN_RECORD).read_text()), **trained_for(run)}
        sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
        n_test = test_class_count(bundle)
        report["methods"][method] = {}
        for n in ways:
            for k in shots:
                queries = min(15, DRAWINGS - k)
                key = f"{n}-way {k}-shot"
                if n_test and n > n_test:
                    report["methods"][method][key] = {"skipped": f"{n} ways > {n_test} test classes"}
                    continue
                identity = {"bundle_sha256": sha, "episodes": episodes, "queries": queries, "seed": seed}
                path = cell_cache(out, method, key)
                done = cached_cell(path, identity)
                if done is not None:
                    report["methods"][method][key] = {**done, "bundle_sha256": sha}
                    continue
                job = (path, identity, (bundle, n, k, queries, episodes, seed))
                pending.append((method, key, pool.submit(measure_cell, *job) if pool else None, job))
        if pool is None:
            _collect(pending, report)
    _collect(pending, report)
    if pool is not None:
        pool.shutdown()
    report["best"] = best_per_cell(report["methods"])
    return report


def _collect(pending: list, report: dict[str, Any]) -> None:
    """Wait for (or, without workers, measure) every pending cell."""
    while pending:
        method, key, future, job = pending.pop(0)
        log(f"{method}: {key}")
        result = future.result() if future is not None else measure_cell(*job)
        report["methods"][method][key] = {**result, "bundle_sha256": job[1]["bundle_sha256"]}


def best_per_cell(methods: dict[str, dict[str, dict]]) -> dict[str, dict[str, Any]]:
    """Per cell: the best method and every method whose CI reaches the best mean (statistically tied)."""
    best: dict[str, dict[str, Any]] = {}
    cells = {cell for results in methods.values() for cell in results}
    for cell in sorted(cells, key=cell_order):
        scored = {m: r[cell] for m, r in methods.items() if "accuracy" in r.get(cell, {})}
        if not scored:
            continue
        top = max(scored, key=lambda m: scored[m]["accuracy"])
        floor = scored[top]["accuracy"] - scored[top]["ci95"]
        tied = [m for m, r in scored.items() if m != top and r["accuracy"] + r["ci95"] >= floor]
        best[cell] = {"best": top, "within_ci": tied}
    return best


def cell_order(cell: str) -> tuple[int, int]:
    ways, shots = cell.split("-way ")
    return int(ways), int(shots.removesuffix("-shot"))


def markdown(report: dict[str, Any]) -> str:
    """Rows: cells; columns: methods; best in bold, * within the CI of the best."""
    methods = list(report["methods"])
    lines = [f"Accuracy (%) through the device runtime on `{report['data']}` test classes, "
             f"{report['episodes']} episodes per cell (seed {report['seed']}); **best**, * within its 95% CI.", "",
             "| cell | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for cell, best in report["best"].items():
        row = []
        for method in methods:
            r = report["methods"][method].get(cell, {})
            if "accuracy" not in r:
                row.append("n/a")
                continue
            text = f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
            row.append(f"**{text}**" if method == best["best"] else text + (" *" if method in best["within_ci"]
                                                                               else ""))
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    trained = report.get("trained", {})
    if trained:  # what each method's budget bought: a row no method's figures can be read without
        lines.append("| trained for | " + " | ".join(_trained_text(trained.get(m, {})) for m in methods) + " |")
    return "\n".join(lines) + "\n"


def _trained_text(record: dict[str, Any]) -> str:
    """'468.6 CPU-s, 30 epochs' / '539.2 CPU-s, 15 iterations' from a run's time record and last metrics."""
    parts = [f"{record['cpu_seconds']:.1f} CPU-s"] if "cpu_seconds" in record else []
    for key, unit in (("epoch", "epochs"), ("iteration", "iterations")):
        if key in record:
            parts.append(f"{record[key]} {unit}")
    return ", ".join(parts) or "n/a"


def heat_map(report: dict[str, Any], path: Path) -> None:
    """Methods × cells, colour = accuracy, the best of each cell boxed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    methods, cells = list(report["methods"]), list(report["best"])
    values = [[100 * report["methods"][m].get(c, {}).get("accuracy", math.nan) for c in cells] for m in methods]
    fig, ax = plt.subplots(figsize=(1.2 * len(cells) + 2.5, 0.5 * len(methods) + 1.8))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cells)), cells, rotation=45, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for j, cell in enumerate(cells):
        for i in range(len(methods)):
            if not math.isnan(values[i][j]):
                ax.text(j, i, f"{values[i][j]:.1f}", ha="center", va="center", fontsize=8, color="white")
        i = methods.index(report["best"][cell]["best"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(f"device-runtime accuracy, {report['data']}")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    from mtl.pipeline.atomic import atomic_write_text

    atomic_write_text(out / "grid.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "grid.md", markdown(report))
    heat_map(report, out / "grid.png")


def log(message: str) -> None:
    print(f"[accuracy_grid] {message}", file=sys.stderr, flush=True)


def ints(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(","))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="omniglot:../shared/data/omniglot", help="data spec (mtl's)")
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy-grid"), help="runs, bundles and reports")
    known = tuple(methods())
    parser.add_argument("--methods", default=",".join(known), help=f"comma-separated subset of {', '.join(known)}")
    parser.add_argument("--ways", type=ints, default=(5, 20, 35))
    parser.add_argument("--shots", type=ints, default=(1, 5, 15))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-epochs", type=int, default=Budget.pretrain_epochs)
    parser.add_argument("--iterations", type=int, default=Budget.iterations)
    parser.add_argument("--meta-batch", type=int, default=Budget.meta_batch)
    parser.add_argument("--seconds", type=float, default=None,
                        help="meta-training wall-clock budget per method (--iterations is then a cap)")
    parser.add_argument("--cpu-seconds", type=float, default=None,
                        help="meta-training CPU-time budget per method (default, without --seconds: the CPU time "
                             "the transfer run's pretraining took)")
    parser.add_argument("--calibrate-episodes", type=int, default=None,
                        help=f"validation episodes per cell of each run's closing `mtl calibrate` (default "
                             f"{Budget.calibrate_episodes}, --quick 0; 0: none); a body-adapting inner loop makes "
                             "this the slowest part on a CPU. A trained run calibrated otherwise is recalibrated")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes evaluating cells while methods train")
    parser.add_argument("--reuse", type=Path, action="append", default=[], metavar="REPORT",
                        help="an earlier grid report (grid.json): its methods measured on every cell with this data, "
                             "budget, episodes and seed are taken as they stand, not trained again (repeatable)")
    parser.add_argument("--split", default="0.6,0.2,0.2", help="train,val,test fractions (mtl's --split)")
    parser.add_argument("--split-by", default="auto", help="mtl's --split-by")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: synthetic data, tiny budgets")
    parser.add_argument("--json", action="store_true", help="print the JSON only (no markdown table)")
    args = parser.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(","))
    unknown = sorted(set(args.methods) - set(known))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(known)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be ≥ 1, got {args.jobs}")
    if args.episodes < 1:
        parser.error(f"--episodes must be ≥ 1, got {args.episodes}")
    if args.calibrate_episodes is not None and args.calibrate_episodes < 0:
        parser.error(f"--calibrate-episodes must be ≥ 0, got {args.calibrate_episodes}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    calibrate = args.calibrate_episodes
    budget = Budget(pretrain_epochs=args.pretrain_epochs, iterations=args.iterations, meta_batch=args.meta_batch,
                    device=args.device, seconds=args.seconds, cpu_seconds=args.cpu_seconds,
                    calibrate_episodes=Budget.calibrate_episodes if calibrate is None else calibrate,
                    split=tuple(float(v) for v in args.split.split(",")), split_by=args.split_by)
    data, ways, shots, episodes = args.data, args.ways, args.shots, args.episodes
    if args.quick:
        budget = dataclasses.replace(budget, pretrain_epochs=2, iterations=4, meta_batch=2, queries=5, inner_steps=2,
                                     rotations=False, device="cpu", val_episodes=10,
                                     calibrate_episodes=0 if calibrate is None else calibrate)
        data, ways, shots, episodes = "synthetic:60", (5,), (1, 5), 20
    try:
        earlier = reusable(args.reuse, data, budget, ways, shots, episodes, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_grid(data, args.out, budget, args.methods, ways, shots, episodes, args.seed, args.jobs, earlier)
    write_outputs(report, args.out)
    if not args.json:
        print(markdown(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
