"""On-device adaptation: the torch-free device runtime beside PyTorch eager, on the CPU, in one run.

What is measured, per workload (backbone × input, N-way K-shot, 10 adapt steps, a query batch of 25):

- ours: `device_runtime` (numpy + onnxruntime + Pillow, one intra-op thread) in its own process, which
  must never import torch: `Bundle.load`; the first inference after it (one image: session warm-up);
  decode + preprocess of the support PNGs; `embed` of the support set; one `adapt_step` (mean over the
  steps); end to end = `add_examples` for every class (decode → preprocess → embed) + `adapt(steps)`;
  `predict` of the query batch (decode → embed → head); the process's peak RSS after one pass (load,
  adapt, predict: what a device process does), and after all the runs.
- baseline: PyTorch eager (`torch.set_num_threads(1)`) in another process doing the same work with the
  trainer's own code: Pillow decode (`pipeline.data.load_image`), `normalize`, the body in eval mode
  under `no_grad`, the proto head init, `exporters.graphs.adapt_step_fn` (the function traced into
  `adapt_step.onnx`) and `predict_fn`.

Ours runs twice: with the float bundle (the same arithmetic as the baseline) and with the bundle of
`mtl export --quantize int8` (int8 extractor, calibrated on images of other classes; float head),
each with its own speedup and targets. The workers live in device_adapt_workers.py.

Images (device_adapt_images.py): Conv-4 28×28 is measured on what it is for, real Omniglot drawings
(105×105 1-bit PNGs read from `--omniglot`, default ../shared/data/omniglot); ResNet-12 84×84 on
generated 84×84 RGB PNGs. `--synthetic-images` measures generated 8-bit noise PNGs for Conv-4 too
(105×105, about 30× larger files than Omniglot's, so decoding, which both sides share, costs about
twice as much: a worst case).

Every step runs in a process of its own (export, ours, baseline), so each side's peak RSS is its own.
Both sides read the same PNG files and run steps + 1 head steps end to end (the extra one measures the
final loss, as `Adapter.adapt` does). Weights are a random initialisation (timing does not depend on
training) written as a pretrain checkpoint and exported with `export_bundle`. Times are medians over
`--repeats` runs after one warm-up run. Speedup = baseline time / ours.

Run:  .venv/bin/python benchmarks/device_adapt.py [--json] [--repeats 5] [--quick] [--backbone conv4]
          [--synthetic-images] [--omniglot PATH]
(`--quick`: conv4 only, 28×28, 5-way 2-shot, 2 steps, 1 repeat — the CI smoke run.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORKER_FILE = Path(__file__).resolve().with_name("device_adapt_workers.py")
sys.path.insert(0, str(WORKER_FILE.parent))

from device_adapt_images import OMNIGLOT_DIR  # noqa: E402  (a sibling file, importable once its folder is on the path)
from device_adapt_workers import (  # noqa: E402  (a sibling file, importable once its folder is on the path)
    FULL,
    MB,
    QUICK,
    TARGET_BUNDLE_BYTES,
    TARGET_RSS_MB,
    TARGET_SPEEDUP,
    TIMES,
    Workload,
    rss_mb,
)


def run_worker(side: str, job: Path) -> dict[str, Any]:
    """Run one side in a fresh process (so its peak RSS is its own) and read its JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(WORKER_FILE), side, str(job)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def run_workload(w: Workload, repeats: int, root: Path, omniglot: Path) -> dict[str, Any]:
    """Export and write the PNGs, measure both sides, compare; each step in its own process."""
    work = root / w.name
    work.mkdir(parents=True)
    log(f"{w.name}: exporting the bundle, writing the PNGs")
    (work / "setup.json").write_text(json.dumps({"workload": asdict(w), "work": str(work), "omniglot": str(omniglot)}))
    setup = run_worker("setup", work / "setup.json")
    job = work / "job.json"
    job.write_text(json.dumps({**setup, "steps": w.steps, "repeats": repeats}))
    job_int8 = work / "job-int8.json"
    job_int8.write_text(json.dumps({**setup, "bundle": setup["bundle_int8"], "steps": w.steps, "repeats": repeats}))
    log(f"{w.name}: device runtime (onnxruntime) × {repeats + 1}, float bundle")
    ours = run_worker("device", job)
    log(f"{w.name}: device runtime (onnxruntime) × {repeats + 1}, int8 bundle")
    ours_int8 = run_worker("device", job_int8)
    log(f"{w.name}: PyTorch eager baseline × {repeats + 1}")
    baseline = run_worker("torch", job)
    return compare(w, setup, ours, ours_int8, baseline)




def compare(w: Workload, setup: dict[str, Any], ours: dict[str, Any], ours_int8: dict[str, Any],
            baseline: dict[str, Any]) -> dict[str, Any]:
    """One workload's report: each side in ms and MB, speedups (baseline / ours) of the float and the
    int8 bundle, checks and targets."""
    bundles = {"float": setup["bundle_info"], "int8": setup["bundle_int8_info"]}
    sides = {"float": ours, "int8": ours_int8}
    speedup = {kind: {key.removesuffix("_s"): round(baseline[key] / side[key], 3) for key in TIMES}
               for kind, side in sides.items()}
    agree = {kind: statistics.mean(a == b for a, b in zip(side["predicted"], baseline["predicted"], strict=True))
             for kind, side in sides.items()}
    targets = {f"end_to_end_3x_faster_{kind}": speedup[kind]["end_to_end"] >= TARGET_SPEEDUP for kind in sides}
    if w.backbone == "conv4":
        targets.update({f"device_peak_rss_le_120mb_{kind}": side["peak_rss_mb"] <= TARGET_RSS_MB
                        for kind, side in sides.items()})
        targets.update({f"bundle_le_1mb_{kind}": bundles[kind]["total_bytes"] <= TARGET_BUNDLE_BYTES
                        for kind in sides})
    return {"name": w.name, "workload": asdict(w), "embed_batch": setup["embed_batch"], "bundle": bundles,
            "ours": side_report(ours), "ours_int8": side_report(ours_int8), "baseline": side_report(baseline),
            "speedup": speedup["float"], "speedup_int8": speedup["int8"],
            "check": {"loss_before": [ours["loss_before"], ours_int8["loss_before"], baseline["loss_before"]],
                      "final_loss": [ours["final_loss"], ours_int8["final_loss"], baseline["final_loss"]],
                      "predictions_agree_with_baseline": agree},
            "targets": targets}


def side_report(side: dict[str, Any]) -> dict[str, Any]:
    """Times in ms (medians), peak RSS in MB, threads."""
    times = {key.removesuffix("_s") + "_ms": round(side[key] * 1e3, 4) for key in TIMES}
    hwm = side["vm_hwm_mb"]
    return {**times, "peak_rss_mb": round(side["peak_rss_mb"], 1),
            "peak_rss_mb_all_runs": round(side["peak_rss_mb_all_runs"], 1), "vm_hwm_mb": hwm and round(hwm, 1),
            "rss_after_imports_mb": round(side["rss_after_imports_mb"], 1), "threads": side["threads"],
            **({"torch_imported": side["torch_imported"]} if "torch_imported" in side else {})}


def run_benchmark(workloads: tuple[Workload, ...], repeats: int, quick: bool,
                  omniglot: Path = OMNIGLOT_DIR) -> dict[str, Any]:
    """Every workload, measured in one run, with the settings, the environment and the target summary."""
    with tempfile.TemporaryDirectory(prefix="mtl-device-adapt-") as tmp:
        reports = [run_workload(w, repeats, Path(tmp), omniglot) for w in workloads]
    targets = {}
    for kind in ("float", "int8"):
        conv4 = [r["targets"] for r in reports if r["workload"]["backbone"] == "conv4"]
        targets[kind] = {"end_to_end_3x_faster": all(r["targets"][f"end_to_end_3x_faster_{kind}"] for r in reports),
                         "conv4_device_peak_rss_le_120mb": all(t[f"device_peak_rss_le_120mb_{kind}"] for t in conv4),
                         "conv4_bundle_le_1mb": all(t[f"bundle_le_1mb_{kind}"] for t in conv4)}
        targets[kind]["all_met"] = all(targets[kind].values())
    settings = {"quick": quick, "repeats": repeats, "warmup_runs": 1, "statistic": "median",
                "weights": "random initialisation: timing does not depend on training",
                "threads": {"onnxruntime_intra_op": 1, "torch_set_num_threads": 1, "OMP_NUM_THREADS": 1},
                "speedup": "baseline time / ours", "mb": "2**20 bytes",
                "end_to_end": "add_examples for every class (PNG decode, preprocess, embed) + adapt(steps); "
                              "steps + 1 head steps on both sides (the last measures the final loss)",
                "predict": "decode + preprocess + embed + head of the query batch",
                "peak_rss_mb": "after one pass (load, adapt, predict once, as a device does); "
                               "peak_rss_mb_all_runs: after every run, each of which loads the model again",
                "images": {w.name: w.images for w in workloads},
                "omniglot": str(omniglot) if any(w.images == "omniglot" for w in workloads) else None,
                "check": "same PNGs and weights on both sides: loss_before agrees to float precision; final_loss "
                         "and predictions can part where the random-init head oscillates at the default lr"}
    settings["launcher_peak_rss_mb"] = round(rss_mb(), 1)
    return {"benchmark": "device_adapt", "settings": settings, "environment": environment(),
            "workloads": reports, "targets": targets}


def environment() -> dict[str, Any]:
    """Interpreter, machine and package versions (read without importing the packages)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            **{name: installed(name) for name in ("torch", "onnxruntime", "numpy", "pillow")}}


def render_table(result: dict[str, Any]) -> str:
    """A readable summary: one row per workload, end to end first (float bundle, then int8)."""
    head = (f"{'workload':<34} {'e2e torch':>9} {'e2e ours':>9} {'speedup':>7} {'e2e int8':>9} {'speedup':>7} "
            f"{'step ours':>9} {'step torch':>10} {'RSS ours':>8} {'RSS torch':>9} {'bundle':>8} {'int8':>7}")
    rows = [head, "-" * len(head)]
    for r in result["workloads"]:
        ours, int8, base = r["ours"], r["ours_int8"], r["baseline"]
        rows.append(f"{r['name']:<34} {base['end_to_end_ms']:>7.1f}ms {ours['end_to_end_ms']:>7.1f}ms "
                    f"{r['speedup']['end_to_end']:>6.2f}x {int8['end_to_end_ms']:>7.1f}ms "
                    f"{r['speedup_int8']['end_to_end']:>6.2f}x {ours['adapt_step_ms']:>7.3f}ms "
                    f"{base['adapt_step_ms']:>8.3f}ms {ours['peak_rss_mb']:>6.0f}MB {base['peak_rss_mb']:>7.0f}MB "
                    f"{r['bundle']['float']['total_bytes'] / MB:>6.2f}MB "
                    f"{r['bundle']['int8']['total_bytes'] / MB:>5.2f}MB")
    for kind, targets in result["targets"].items():
        rows.append(f"targets ({kind}): " + ", ".join(f"{k}={v}" for k, v in targets.items()))
    return "\n".join(rows)


def log(message: str) -> None:
    print(f"[device_adapt] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON only (no table)")
    parser.add_argument("--repeats", type=int, default=None, help="measured runs per side (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a CI smoke run")
    parser.add_argument("--backbone", choices=sorted({w.backbone for w in FULL}), default=None,
                        help="measure this backbone's workloads only")
    parser.add_argument("--synthetic-images", action="store_true",
                        help="generated 8-bit noise PNGs for every workload, Conv-4 included (a worst case for "
                             "decoding) instead of real Omniglot drawings")
    parser.add_argument("--omniglot", type=Path, default=OMNIGLOT_DIR,
                        help=f"folder of the Omniglot archives images_*.zip (default {OMNIGLOT_DIR})")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1, got {args.repeats}")
    return args


def workloads(args: argparse.Namespace) -> tuple[Workload, ...]:
    """The workloads the options select."""
    chosen = QUICK if args.quick else FULL
    chosen = tuple(w for w in chosen if args.backbone in (None, w.backbone))
    if args.synthetic_images:
        chosen = tuple(replace(w, images="synthetic") for w in chosen)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    chosen = workloads(args)
    if any(w.images == "omniglot" for w in chosen) and not any(args.omniglot.glob("images_*.zip")):
        print(f"error: no Omniglot archives (images_*.zip) in {args.omniglot}; pass --omniglot PATH, or "
              "--synthetic-images to measure generated PNGs instead", file=sys.stderr)
        return 2
    result = run_benchmark(chosen, repeats, args.quick, args.omniglot)
    if not args.json:
        print(render_table(result))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
