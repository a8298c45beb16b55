"""Meta-training throughput: mtl's engine beside the per-task loop the field's libraries use, in one run.

What is measured, per workload (backbone × input, N-way K-shot, inner steps, meta-batch, algorithm):

- loop (the baseline): what learn2learn / higher-style code does — a Python loop over the tasks of the
  meta-batch, a fresh differentiable copy of the adapted parameters per task (`clone()`), the inner steps
  with `torch.autograd.grad(..., create_graph=not first_order)`, and the query loss of each task
  back-propagated before the next task starts. It uses the learner's own model maths (the same body, the
  composite per-task BatchNorm, head initialisation and loss), so gradients are comparable.
- ours, as `mtl meta-train` runs it (`Algorithm.update`: vmap over tasks, OOM-halving chunks, Adam):
  `vmap` (float32; TF32 on CUDA), `vmap+compile` (`--compile`), `vmap+compile+bf16` (the CUDA default),
  and on CUDA `vmap+compile+bf16+cudagraphs` (torch.compile mode "reduce-overhead": a candidate, not a default).

Every variant takes the same sampled meta-batches (`ImageTasks` over random uint8 images already on the
device) and makes full outer steps (sample → meta-gradient → Adam). Reported: tasks per second over
`--iterations` timed steps after warm-up (compilation happens in warm-up), peak device memory of the timed
steps (CUDA only; `null` on CPU), and ours/baseline ratios. Before timing, the meta-gradients of the first
meta-batch are compared with the loop's (relative L2 error over all parameters: float64 for `vmap`, the
variant's own dtype for the others; see `check_gradients`), so speed is not bought with a different
computation. The exit status is 1 if any check fails.

Sizes: on CUDA the issue's workloads (conv4 28×28 20-way 1-shot and 5-way 5-shot, 5 steps, 32 tasks:
MAML, FOMAML, mtl head-only; resnet12 84×84 5-way 1-shot: FOMAML, head-only). On CPU the same workloads
shrunk (narrower nets, 8 tasks, 2 steps) and no compile unless `--compile` (compiling costs a minute a
workload there). `--quick`: one tiny second-order conv4 workload — the CI smoke run.

Run:  .venv/bin/python benchmarks/meta_train_throughput.py [--json] [--quick] [--compile] [--only NAME]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from mtl.pipeline.algorithms import get_algorithm  # noqa: E402
from mtl.pipeline.data.class_images import ClassImages  # noqa: E402
from mtl.pipeline.data.images import InputSpec  # noqa: E402
from mtl.pipeline.meta.batch import Hyper, TaskBatch, accumulate_meta_gradient  # noqa: E402
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner  # noqa: E402
from mtl.pipeline.train.meta_train import fast_cuda_math  # noqa: E402
from mtl.pipeline.train.tasks import ImageTasks  # noqa: E402

MB = 1024 * 1024
TARGET_TASKS_PER_S, TARGET_SPEEDUP = 1000.0, 50.0
TARGET_WORKLOAD = "conv4-20w1s-maml"
FLOAT64_TOLERANCE, FLOAT_TOLERANCE, BF16_TOLERANCE = 1e-9, 1e-4, 5e-2  # relative L2 error of meta-gradients


@dataclass(frozen=True)
class Workload:
    name: str
    backbone: str
    size: int
    ways: int
    shots: int
    algorithm: str  # maml (second order) | fomaml | mtl (head-only inner loop on a scaled/shifted body)
    steps: int = 5
    meta_batch: int = 32
    queries: int = 5
    channels: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def workloads(device: torch.device, quick: bool) -> list[Workload]:
    """The issue's workloads at full size on CUDA; narrower, 8 tasks and 2 steps on CPU."""
    if quick:
        return [Workload("conv4-5w1s-maml", "conv4", 28, 5, 1, "maml", steps=2, meta_batch=4, queries=2,
                         options={"width": 16})]
    small = device.type != "cuda"
    conv = {"width": 32} if small else {}
    resnet = {"channels": (16, 32, 64, 128)} if small else {}
    shrink = {"steps": 2, "meta_batch": 8} if small else {}
    out = [Workload(f"conv4-{n}w{k}s-{alg}", "conv4", 28, n, k, alg, options=conv, **shrink)
           for n, k in ((20, 1), (5, 5)) for alg in ("maml", "fomaml", "mtl")]
    out += [Workload(f"resnet12-5w1s-{alg}", "resnet12", 32 if small else 84, 5, 1, alg, queries=15, channels=3,
                     options=resnet, **shrink) for alg in ("fomaml", "mtl")]
    return out


def make_learner(w: Workload, seed: int = 0) -> MetaLearner:
    spec = LearnerSpec(backbone=w.backbone, in_channels=w.channels, image_size=w.size, options=dict(w.options),
                       adapt="head" if w.algorithm == "mtl" else "all", scale_shift=w.algorithm == "mtl",
                       inner_lr=0.1)
    torch.manual_seed(seed)
    learner = MetaLearner(spec)
    with torch.no_grad():  # a non-zero shared class vector: the head's meta-gradient is not all symmetric
        learner.head.init_weight.normal_(0, 0.1)
    return learner


def make_tasks(w: Workload, device: torch.device, seed: int = 0) -> ImageTasks:
    """Random uint8 images (64 classes × (K + Q) each) on the device, sampled as `mtl meta-train` samples."""
    g = torch.Generator().manual_seed(seed)
    per_class = [torch.randint(0, 256, (w.shots + w.queries, w.channels, w.size, w.size), generator=g,
                               dtype=torch.uint8) for _ in range(64)]
    spec = InputSpec(size=w.size, channels=w.channels, mean=(0.5,) * w.channels, std=(0.25,) * w.channels)
    data = ClassImages.from_arrays(per_class, [f"c{i}" for i in range(64)], None, spec).to(device)
    return ImageTasks(data, w.ways, w.shots, w.queries, w.meta_batch, seed)


def loop_meta_gradient(learner: MetaLearner, batch: TaskBatch, steps: int, first_order: bool) -> None:
    """The baseline: per task, clone the adapted parameters, adapt with autograd.grad, backward the query loss."""
    p, lr, n_way = learner.state_params(), learner.spec.inner_lr, batch.n_way
    for i in range(len(batch)):
        sx, sy, qx, qy = batch.support[i], batch.support_labels[i], batch.query[i], batch.query_labels[i]
        if not learner.adapts_body:
            feats = learner.features(p, sx)
            fast = {n: t.clone() for n, t in learner.init_head(p, feats, sy, n_way).items()}

            def support_loss(fast: dict[str, torch.Tensor], feats: torch.Tensor = feats, sy: torch.Tensor = sy):
                return learner.task_loss(learner.head_logits(p, fast, feats), sy)
        else:
            fast = {n: p[n].clone() for n in learner.adaptable_body()}
            fast.update({n: t.clone() for n, t in learner.init_head(p, learner.features(p, sx), sy, n_way).items()})

            def support_loss(fast: dict[str, torch.Tensor], sx: torch.Tensor = sx, sy: torch.Tensor = sy):
                return learner.task_loss(learner.full_logits(p, fast, sx), sy)
        for _ in range(steps):
            names = list(fast)
            grads = torch.autograd.grad(support_loss(fast), [fast[n] for n in names], create_graph=not first_order)
            fast = {n: fast[n] - lr * g for n, g in zip(names, grads, strict=True)}
        (learner.task_loss(learner.predict(p, fast, qx), qy) / len(batch)).backward()


def variants(device: torch.device, with_compile: bool) -> dict[str, Hyper | None]:
    """Name → the engine's Hyper (None: the loop). bf16 autocast is a CUDA path."""
    out: dict[str, Hyper | None] = {"loop": None, "vmap": Hyper()}
    if with_compile:
        out["vmap+compile"] = Hyper(compile=True)
    if device.type == "cuda":
        out["vmap+compile+bf16"] = Hyper(compile=with_compile, bf16=True)  # `mtl meta-train`'s CUDA default
        out["vmap+compile+bf16+cudagraphs"] = Hyper(compile=with_compile, bf16=True, compile_mode="reduce-overhead")
    return out


def meta_gradient(learner: MetaLearner, batch: TaskBatch, hp: Hyper | None, w: Workload) -> torch.Tensor:
    """All parameters' meta-gradients of one meta-batch, flattened (float64 for the comparison)."""
    learner.zero_grad(set_to_none=True)
    first_order = w.algorithm == "fomaml"
    if hp is None:
        loop_meta_gradient(learner, batch, w.steps, first_order)
    else:
        accumulate_meta_gradient(learner, batch, dataclasses.replace(hp, inner_steps=w.steps), first_order)
    grads = [t.grad.reshape(-1) for t in learner.parameters() if t.requires_grad and t.grad is not None]
    return torch.cat(grads).double()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


def check_gradients(w: Workload, device: torch.device, kinds: dict[str, Hyper | None]) -> dict[str, Any]:
    """Each engine variant's meta-gradient against the loop's, on the same meta-batch (relative L2 error).

    `vmap` is compared in float64, where one computation in two orders agrees to ~1e-15, so a match there
    proves the same maths. Float32 has a floor of its own: the loop and `vmap` in float32 (two orders of
    that one computation) already differ by `float32_floor` — up to ~1e-3 for ResNet-12 whose per-task
    BatchNorm sees five images — so a compiled variant passes within max(1e-4, 10 × floor) of the float32
    loop, and bf16 within 5e-2. Float32 here means without TF32.
    """
    learner, batch = make_learner(w).to(device), make_tasks(w, device).sample()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        wide, wide_batch = make_learner(w).to(device, torch.float64), as_float64(batch)
        exact = relative_error(meta_gradient(wide, wide_batch, Hyper(), w), meta_gradient(wide, wide_batch, None, w))
        reference = meta_gradient(learner, batch, None, w)
        floor = relative_error(meta_gradient(learner, batch, Hyper(), w), reference)
        out = {"vmap": {"relative_error": exact, "dtype": "float64", "tolerance": FLOAT64_TOLERANCE,
                        "match": exact <= FLOAT64_TOLERANCE, "float32_floor": floor}}
        for name, hp in kinds.items():
            if hp is None or name == "vmap":
                continue
            error = relative_error(meta_gradient(learner, batch, hp, w), reference)
            tolerance = BF16_TOLERANCE if hp.bf16 else max(FLOAT_TOLERANCE, 10 * floor)
            out[name] = {"relative_error": error, "dtype": "bfloat16" if hp.bf16 else "float32",
                         "tolerance": tolerance, "match": error <= tolerance}
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def as_float64(batch: TaskBatch) -> TaskBatch:
    return dataclasses.replace(batch, support=batch.support.double(), query=batch.query.double())


def outer_step(w: Workload, learner: MetaLearner, hp: Hyper | None) -> Callable[[TaskBatch], None]:
    """One full outer step as each side makes it: meta-gradient, then Adam."""
    optimizer = torch.optim.Adam([t for t in learner.parameters() if t.requires_grad], lr=1e-3)
    if hp is not None:
        hp = dataclasses.replace(hp, inner_steps=w.steps, first_order=w.algorithm == "fomaml")
        algorithm = get_algorithm("maml")  # FOMAML is MAML with hp.first_order; MTL's update is the same step
        return lambda batch: algorithm.update(learner, batch, [optimizer], hp)

    def loop_step(batch: TaskBatch) -> None:
        optimizer.zero_grad(set_to_none=True)
        loop_meta_gradient(learner, batch, w.steps, w.algorithm == "fomaml")
        optimizer.step()

    return loop_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(w: Workload, device: torch.device, hp: Hyper | None, iterations: int, warmup: int) -> dict[str, Any]:
    """Tasks per second of `iterations` timed outer steps after `warmup` ones; peak CUDA memory while timed."""
    learner, tasks = make_learner(w).to(device), make_tasks(w, device)
    step = outer_step(w, learner, hp)
    began = time.perf_counter()
    for _ in range(warmup):
        step(tasks.sample())
    sync(device)
    warmup_s = time.perf_counter() - began
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    for _ in range(iterations):
        step(tasks.sample())
    sync(device)
    seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None
    return {"tasks_per_s": round(iterations * w.meta_batch / seconds, 3),
            "step_ms": round(1e3 * seconds / iterations, 3), "peak_mb": None if peak is None else round(peak, 1),
            "warmup_s": round(warmup_s, 3)}


def run_workload(w: Workload, device: torch.device, kinds: dict[str, Hyper | None], iterations: int,
                 warmup: int) -> dict[str, Any]:
    check = check_gradients(w, device, kinds)
    results = {name: measure(w, device, hp, iterations, warmup) for name, hp in kinds.items()}
    loop = results["loop"]
    for name, r in results.items():
        if name != "loop":
            r["speedup"] = round(r["tasks_per_s"] / loop["tasks_per_s"], 3)
            r["memory_ratio"] = None if r["peak_mb"] is None else round(r["peak_mb"] / loop["peak_mb"], 3)
    report = {"workload": asdict(w), "variants": results, "gradient_check": check}
    if w.name == TARGET_WORKLOAD and device.type == "cuda":
        best = max((r for n, r in results.items() if n != "loop"), key=lambda r: r["tasks_per_s"])
        report["targets"] = {"tasks_per_s_ge_1000": best["tasks_per_s"] >= TARGET_TASKS_PER_S,
                             "speedup_ge_50": best["speedup"] >= TARGET_SPEEDUP,
                             "peak_memory_le_loop": best["peak_mb"] <= loop["peak_mb"]}
    return report


def settings(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": device.type, "device_name": name, "torch": torch.__version__, "quick": args.quick,
            "iterations": args.iterations, "warmup": args.warmup, "threads": torch.get_num_threads(),
            "python": platform.python_version()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print the report as JSON (default: a table).")
    parser.add_argument("--quick", action="store_true", help="One tiny workload, no compile: the CI smoke run.")
    parser.add_argument("--compile", action="store_true", help="Also time --compile on CPU (always on CUDA).")
    parser.add_argument("--only", action="append", default=[], help="Run only this workload (repeatable).")
    parser.add_argument("--iterations", type=int, default=None, help="Timed outer steps per variant.")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed outer steps first (compiles).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args(argv)
    args.iterations = args.iterations or (2 if args.quick else 10)
    args.warmup = args.warmup or (1 if args.quick else 3)
    return args


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['settings']['device_name']} ({report['settings']['device']}), torch "
             f"{report['settings']['torch']}", f"{'workload':<22} {'variant':<18} {'tasks/s':>9} {'×loop':>7} "
             f"{'peak MB':>8} {'grad rel err':>12}"]
    for wl in report["workloads"]:
        for name, r in wl["variants"].items():
            err = wl["gradient_check"].get(name, {}).get("relative_error")
            lines.append(f"{wl['workload']['name']:<22} {name:<18} {r['tasks_per_s']:>9.1f} "
                         f"{r.get('speedup', 1.0):>7.2f} {r['peak_mb'] if r['peak_mb'] is not None else '-':>8} "
                         f"{'' if err is None else f'{err:.1e}':>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    fast_cuda_math(device)  # as `mtl meta-train` sets up CUDA (TF32, cudnn.benchmark); nothing on CPU
    kinds = variants(device, device.type == "cuda" or (args.compile and not args.quick))
    chosen = [w for w in workloads(device, args.quick) if not args.only or w.name in args.only]
    report = {"settings": settings(device, args),
              "workloads": [run_workload(w, device, copy.copy(kinds), args.iterations, args.warmup) for w in chosen]}
    report["all_gradients_match"] = all(c["match"] for wl in report["workloads"] for c in wl["gradient_check"].values())
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["all_gradients_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
