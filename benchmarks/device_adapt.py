"""On-device adaptation: the torch-free device runtime beside PyTorch eager, on the CPU, in one run.

What is measured, per workload (backbone × input, N-way K-shot, 10 adapt steps, a query batch of 25):

- ours: `device_runtime` (numpy + onnxruntime + Pillow, one intra-op thread) in its own process, which
  must never import torch: `Bundle.load`; the first inference after it (one image: session warm-up);
  decode + preprocess of the support PNGs; `embed` of the support set; one `adapt_step` (mean over the
  steps); end to end = `add_examples` for every class (decode → preprocess → embed) + `adapt(steps)`;
  `predict` of the query batch (decode → embed → head); the process's peak RSS.
- baseline: PyTorch eager (`torch.set_num_threads(1)`) in another process doing the same work with the
  trainer's own code: Pillow decode (`pipeline.data.load_image`), `normalize`, the body in eval mode
  under `no_grad`, the proto head init, `exporters.graphs.adapt_step_fn` (the function traced into
  `adapt_step.onnx`) and `predict_fn`.

Every step runs in a process of its own (export, ours, baseline), so each side's peak RSS is its own.
Both sides read the same PNG files and run steps + 1 head steps end to end (the extra one measures the
final loss, as `Adapter.adapt` does). Weights are a random initialisation (timing does not depend on
training) written as a pretrain checkpoint and exported with `export_bundle`. Times are medians over
`--repeats` runs after one warm-up run. Speedup = baseline time / ours.

Run:  .venv/bin/python benchmarks/device_adapt.py [--json] [--repeats 5] [--quick]
(`--quick`: conv4 only, 28×28, 5-way 2-shot, 2 steps, 1 repeat — the CI smoke run.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:  # torch is imported lazily: the device worker runs this file and must never load it
    import torch

    from exporters.deploy_model import DeployModel

T = TypeVar("T")
QUERY_BATCH = 25
EMBED_BATCH = 64  # `Bundle.embed`'s default batch size; the baseline embeds in the same chunks
MB = 1024 * 1024
TARGET_SPEEDUP, TARGET_RSS_MB, TARGET_BUNDLE_BYTES = 3.0, 120.0, 1 * MB
TIMES = ("load_s", "first_run_s", "preprocess_s", "embed_s", "adapt_step_s", "end_to_end_s", "predict_s")


@dataclass(frozen=True)
class Workload:
    """One measured setting; `png_size` is the side of the PNG files (resized to `size` on both sides)."""

    backbone: str
    channels: int
    size: int
    ways: int
    shots: int
    steps: int = 10
    queries: int = QUERY_BATCH
    png_size: int = 0

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.size}x{self.size}x{self.channels}-{self.ways}way-{self.shots}shot"


FULL = (Workload("conv4", 1, 28, 5, 5, png_size=105), Workload("conv4", 1, 28, 20, 5, png_size=105),
        Workload("resnet12", 3, 84, 5, 5, png_size=84), Workload("resnet12", 3, 84, 20, 5, png_size=84))
QUICK = (Workload("conv4", 1, 28, 5, 2, steps=2, queries=10, png_size=28),)


# ---------------------------------------------------------------- helpers shared by both workers


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is KB on Linux).

    Linux carries the launching process's high-water mark across fork + exec into ru_maxrss, so the
    launcher never imports torch (the export runs in a worker of its own) and reports its own peak
    (`launcher_peak_rss_mb`): a worker's figure is its own whenever it is above that floor.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb() -> float | None:
    """VmHWM of /proc/self/status (this process's own peak RSS, MB): a cross-check of `rss_mb`."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), None)


def support_classes(support: str) -> dict[str, list[str]]:
    """support/<class>/<i>.png → {class: its files}, both sorted."""
    return {d.name: sorted(str(p) for p in d.glob("*.png")) for d in sorted(Path(support).iterdir())}


def repeat(once: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """One warm-up run, then `repeats` runs; the median of every time, the rest from the last run."""
    once()
    runs = [once() for _ in range(repeats)]
    medians = {key: statistics.median(run[key] for run in runs) for key in TIMES}
    return {**runs[-1], **medians}


# ---------------------------------------------------------------- ours: the device worker (no torch)


def device_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Everything the device does, measured in this torch-free process."""
    from device_runtime.bundle import Bundle

    imported_mb = rss_mb()
    result = repeat(lambda: device_once(job, lambda: Bundle.load(job["bundle"], intra_op_num_threads=1)),
                    job["repeats"])
    if "torch" in sys.modules:
        raise RuntimeError("the device worker imported torch; the device path must run without it")
    return {**result, "peak_rss_mb": rss_mb(), "vm_hwm_mb": hwm_mb(), "rss_after_imports_mb": imported_mb,
            "torch_imported": False,
            "threads": {"onnxruntime_intra_op": 1, "onnxruntime_inter_op": 1}}


def device_once(job: dict[str, Any], load: Callable[[], Any]) -> dict[str, Any]:
    """One full pass of the device path; returns its times and what it computed."""
    from device_runtime.adapter import Adapter

    times: dict[str, Any] = {}
    bundle, times["load_s"] = timed(load)
    classes = support_classes(job["support"])
    paths = [p for files in classes.values() for p in files]
    labels = np.repeat(np.arange(len(classes)), [len(f) for f in classes.values()]).astype(np.int64)
    _, times["first_run_s"] = timed(lambda: bundle.embed(bundle.preprocess(paths[:1])))
    images, times["preprocess_s"] = timed(lambda: bundle.preprocess(paths))
    features, times["embed_s"] = timed(lambda: bundle.embed(images))
    times["adapt_step_s"] = device_step_time(bundle, features, labels, job["steps"])
    adapter = Adapter(bundle)
    adapted, times["end_to_end_s"] = timed(lambda: device_adapt(adapter, classes, job["steps"]))
    (predicted, _), times["predict_s"] = timed(lambda: adapter.predict(job["queries"]))
    return {**times, "loss_before": adapted.loss_before, "final_loss": adapted.final_loss, "predicted": predicted}


def device_adapt(adapter: Any, classes: dict[str, list[str]], steps: int) -> Any:
    """The end-to-end device adaptation: embed each class's PNGs, then `steps` exported head steps."""
    for name, files in classes.items():
        adapter.add_examples(name, files)
    return adapter.adapt(steps=steps)


def device_step_time(bundle: Any, features: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """Mean seconds of one `adapt_step.onnx` run on the support features (M, D)."""
    from device_runtime.adapter import init_head

    weight, bias = init_head(bundle, features, labels, int(labels.max()) + 1)
    lr = np.float32(bundle.manifest["adapt"]["lr"])
    lr_weight, lr_bias = np.full((1, bundle.feature_dim), lr, np.float32), np.full((1,), lr, np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        weight, bias, _ = bundle.adapt_step(weight, bias, features, labels, lr_weight, lr_bias)
    return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------- baseline: PyTorch eager worker


def torch_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The same work in PyTorch eager, single-threaded, measured in its own process."""
    import torch

    torch.set_num_threads(1)
    import exporters.graphs  # noqa: F401  (imported before the runs: imports are not what is timed)
    from pipeline.train.checkpoint import load_checkpoint

    imported_mb = rss_mb()
    result = repeat(lambda: torch_once(job, lambda: load_checkpoint(job["checkpoint"])), job["repeats"])
    return {**result, "peak_rss_mb": rss_mb(), "vm_hwm_mb": hwm_mb(), "rss_after_imports_mb": imported_mb,
            "threads": {"torch_intra_op": torch.get_num_threads(), "torch": torch.__version__}}


def torch_once(job: dict[str, Any], load: Callable[[], Any]) -> dict[str, Any]:
    """One full pass of the PyTorch path; returns its times and what it computed."""
    from exporters.deploy_model import deploy_model

    times: dict[str, Any] = {}
    dm, times["load_s"] = timed(lambda: deploy_model(load()))
    classes = support_classes(job["support"])
    paths = [p for files in classes.values() for p in files]
    _, times["first_run_s"] = timed(lambda: torch_embed(dm, torch_images(dm, paths[:1])))
    images, times["preprocess_s"] = timed(lambda: torch_images(dm, paths))
    features, times["embed_s"] = timed(lambda: torch_embed(dm, images))
    times["adapt_step_s"] = torch_step_time(dm, features, torch_labels(classes), job["steps"])
    (head, losses), times["end_to_end_s"] = timed(lambda: torch_adapt(dm, classes, job["steps"]))
    predicted, times["predict_s"] = timed(lambda: torch_predict(dm, head, job["queries"], list(classes)))
    return {**times, "loss_before": losses[0], "final_loss": losses[-1], "predicted": predicted}


def torch_images(dm: DeployModel, paths: list[str]) -> torch.Tensor:
    """PNG files → normalised float32 (B, C, H, W): Pillow decode as in training, then `normalize`."""
    import torch

    from pipeline.data import load_image
    from pipeline.train.common import normalize

    return normalize(torch.from_numpy(np.stack([load_image(p, dm.input_spec) for p in paths])), dm.input_spec)


def torch_embed(dm: DeployModel, images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) → features (B, D) with the frozen body in eval mode, `EMBED_BATCH` images per
    forward as `Bundle.embed` runs them."""
    import torch

    with torch.no_grad():
        return torch.cat([dm.body.eval()(chunk) for chunk in images.split(EMBED_BATCH)])


def torch_labels(classes: dict[str, list[str]]) -> torch.Tensor:
    """Class-major labels (M,) int64 of the support set."""
    import torch

    return torch.repeat_interleave(torch.arange(len(classes)), torch.tensor([len(f) for f in classes.values()]))


def torch_step_time(dm: DeployModel, features: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Mean seconds of one eager `adapt_step_fn` call on the support features (M, D)."""
    from exporters.graphs import adapt_step_fn

    weight, bias, lr_weight, lr_bias = torch_head(dm, features, labels, int(labels.max()) + 1)
    step = adapt_step_fn(dm)
    start = time.perf_counter()
    for _ in range(steps):
        weight, bias, _ = step(weight, bias, features, labels, lr_weight, lr_bias)
    return (time.perf_counter() - start) / steps


def torch_head(dm: DeployModel, features: torch.Tensor, labels: torch.Tensor,
               ways: int) -> tuple[torch.Tensor, ...]:
    """The proto-initialised head (W (N, D), b (N,)) and step sizes (1, D), (1,), as the bundle does."""
    import torch

    head = dm.learner.init_head(dm.learner.state_params(), features, labels, ways)
    lr_weight, lr_bias = torch.full((1, features.shape[1]), dm.lr), torch.full((1,), dm.lr)
    return head["head.weight"].detach(), head["head.bias"].detach(), lr_weight, lr_bias


def torch_adapt(dm: DeployModel, classes: dict[str, list[str]],
                steps: int) -> tuple[tuple[torch.Tensor, torch.Tensor], list[float]]:
    """End to end: decode + embed each class, init the head, steps + 1 eager steps → (head, losses)."""
    import torch

    from exporters.graphs import adapt_step_fn

    features = torch.cat([torch_embed(dm, torch_images(dm, files)) for files in classes.values()])
    labels = torch_labels(classes)
    weight, bias, lr_weight, lr_bias = torch_head(dm, features, labels, len(classes))
    step, losses = adapt_step_fn(dm), []
    for index in range(steps + 1):  # the extra run measures the loss after the last step
        new_weight, new_bias, loss = step(weight, bias, features, labels, lr_weight, lr_bias)
        losses.append(float(loss))
        if index < steps:
            weight, bias = new_weight, new_bias
    return (weight, bias), losses


def torch_predict(dm: DeployModel, head: tuple[torch.Tensor, torch.Tensor], paths: list[str],
                  classes: list[str]) -> list[str]:
    """Query PNGs → predicted class names (decode, embed, head softmax)."""
    import torch

    from exporters.graphs import predict_fn

    features = torch_embed(dm, torch_images(dm, paths))
    with torch.no_grad():
        probabilities = predict_fn(dm)(*head, features)
    return [classes[i] for i in probabilities.argmax(dim=1).tolist()]


# ---------------------------------------------------------------- setup, workers and report (this process)


def make_bundle(w: Workload, work: Path) -> tuple[Path, dict[str, Any]]:
    """A randomly initialised model → pretrain checkpoint → exported bundle directory; its sizes."""
    import torch

    from device_runtime.archive import zip_bytes
    from exporters.bundle_export import export_bundle
    from pipeline.config import config_to_dict
    from pipeline.models import ModelSpec, build_model
    from pipeline.train.checkpoint import Checkpoint, save_checkpoint
    from pipeline.train.pretrain import PretrainConfig

    torch.manual_seed(0)
    spec = ModelSpec(backbone=w.backbone, in_channels=w.channels, image_size=w.size, n_classes=64)
    config = PretrainConfig(data="random-init", backbone=w.backbone, image_size=w.size, epochs=1, device="cpu")
    meta = {"kind": "pretrain", "config": config_to_dict(config), "model": spec.to_dict(),
            "input": input_spec(w).to_dict(), "splits": {"train": [], "val": [], "test": []},
            "data": {"scheme": "random-init"}, "epoch": 0}
    checkpoint = work / "pretrain.safetensors"
    save_checkpoint(checkpoint, Checkpoint(meta, build_model(spec).state_dict()))
    report = export_bundle(checkpoint, work / "bundle")
    files = {name: (Path(report.path) / name).read_bytes() for name in report.files}
    return checkpoint, {"path": report.path, "files": report.files, "total_bytes": sum(report.files.values()),
                        "mtlb_bytes": len(zip_bytes(files))}


def input_spec(w: Workload) -> Any:
    """Omniglot's preprocessing for grey inputs (inverted strokes), mini-ImageNet's for RGB."""
    from pipeline.data import InputSpec
    from pipeline.data.mini_imagenet import IMAGENET_MEAN, IMAGENET_STD

    if w.channels == 1:
        return InputSpec(size=w.size, channels=1, invert=True)
    return InputSpec(size=w.size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def write_pngs(w: Workload, work: Path) -> tuple[Path, list[str]]:
    """support/class_XX/I.png (K per class) and a query batch cycling over the classes: a smooth random
    pattern per class plus per-image noise, `png_size` pixels square."""
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (8, 8, w.channels)).astype(np.float32) for _ in range(w.ways)]
    support = work / "support"
    for c, pattern in enumerate(patterns):
        (support / f"class_{c:02d}").mkdir(parents=True)
        for i in range(w.shots):
            save_png(pattern, rng, w.png_size or w.size, support / f"class_{c:02d}" / f"{i}.png")
    (work / "queries").mkdir()
    queries = [work / "queries" / f"{q}.png" for q in range(w.queries)]
    for q, path in enumerate(queries):
        save_png(patterns[q % w.ways], rng, w.png_size or w.size, path)
    return support, [str(q) for q in queries]


def save_png(pattern: np.ndarray, rng: np.random.Generator, size: int, path: Path) -> None:
    """The (8, 8, C) pattern upsampled to size × size with noise, saved as a grey or RGB PNG."""
    from PIL import Image

    image = np.kron(pattern, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def run_worker(side: str, job: Path) -> dict[str, Any]:
    """Run one side in a fresh process (so its peak RSS is its own) and read its JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", side, "--job", str(job)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def run_workload(w: Workload, repeats: int, root: Path) -> dict[str, Any]:
    """Export and write the PNGs, measure both sides, compare; each step in its own process."""
    work = root / w.name
    work.mkdir(parents=True)
    log(f"{w.name}: exporting the bundle, writing the PNGs")
    (work / "setup.json").write_text(json.dumps({"workload": asdict(w), "work": str(work)}))
    setup = run_worker("setup", work / "setup.json")
    job = work / "job.json"
    job.write_text(json.dumps({**setup, "steps": w.steps, "repeats": repeats}))
    log(f"{w.name}: device runtime (onnxruntime) × {repeats + 1}")
    ours = run_worker("device", job)
    log(f"{w.name}: PyTorch eager baseline × {repeats + 1}")
    baseline = run_worker("torch", job)
    return compare(w, setup["bundle_info"], ours, baseline)


def setup_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The torch-side preparation, in its own process so that the launcher stays small (see `rss_mb`)."""
    w, work = Workload(**job["workload"]), Path(job["work"])
    checkpoint, bundle = make_bundle(w, work)
    support, queries = write_pngs(w, work)
    return {"bundle": bundle.pop("path"), "bundle_info": bundle, "checkpoint": str(checkpoint),
            "support": str(support), "queries": queries}


def compare(w: Workload, bundle: dict[str, Any], ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """One workload's report: both sides in ms and MB, speedups (baseline / ours), checks and targets."""
    speedup = {key.removesuffix("_s"): round(baseline[key] / ours[key], 3) for key in TIMES}
    agree = statistics.mean(a == b for a, b in zip(ours["predicted"], baseline["predicted"], strict=True))
    targets = {"end_to_end_3x_faster": speedup["end_to_end"] >= TARGET_SPEEDUP}
    if w.backbone == "conv4":
        targets["device_peak_rss_le_120mb"] = ours["peak_rss_mb"] <= TARGET_RSS_MB
        targets["bundle_le_1mb"] = bundle["total_bytes"] <= TARGET_BUNDLE_BYTES
    return {"name": w.name, "workload": asdict(w), "bundle": bundle,
            "ours": side_report(ours), "baseline": side_report(baseline), "speedup": speedup,
            "check": {"loss_before": [ours["loss_before"], baseline["loss_before"]],
                      "final_loss": [ours["final_loss"], baseline["final_loss"]], "predictions_agree": agree},
            "targets": targets}


def side_report(side: dict[str, Any]) -> dict[str, Any]:
    """Times in ms (medians), peak RSS in MB, threads."""
    times = {key.removesuffix("_s") + "_ms": round(side[key] * 1e3, 4) for key in TIMES}
    hwm = side["vm_hwm_mb"]
    return {**times, "peak_rss_mb": round(side["peak_rss_mb"], 1), "vm_hwm_mb": hwm and round(hwm, 1),
            "rss_after_imports_mb": round(side["rss_after_imports_mb"], 1), "threads": side["threads"],
            **({"torch_imported": side["torch_imported"]} if "torch_imported" in side else {})}


def run_benchmark(workloads: tuple[Workload, ...], repeats: int, quick: bool) -> dict[str, Any]:
    """Every workload, measured in one run, with the settings, the environment and the target summary."""
    with tempfile.TemporaryDirectory(prefix="mtl-device-adapt-") as tmp:
        reports = [run_workload(w, repeats, Path(tmp)) for w in workloads]
    conv4 = [r["targets"] for r in reports if r["workload"]["backbone"] == "conv4"]
    targets = {"end_to_end_3x_faster": all(r["targets"]["end_to_end_3x_faster"] for r in reports),
               "conv4_device_peak_rss_le_120mb": all(t["device_peak_rss_le_120mb"] for t in conv4),
               "conv4_bundle_le_1mb": all(t["bundle_le_1mb"] for t in conv4)}
    settings = {"quick": quick, "repeats": repeats, "warmup_runs": 1, "statistic": "median",
                "weights": "random initialisation: timing does not depend on training",
                "threads": {"onnxruntime_intra_op": 1, "torch_set_num_threads": 1, "OMP_NUM_THREADS": 1},
                "speedup": "baseline time / ours", "mb": "2**20 bytes",
                "end_to_end": "add_examples for every class (PNG decode, preprocess, embed) + adapt(steps); "
                              "steps + 1 head steps on both sides (the last measures the final loss)",
                "predict": "decode + preprocess + embed + head of the query batch",
                "check": "same PNGs and weights on both sides: loss_before agrees to float precision; final_loss "
                         "and predictions can part where the random-init head oscillates at the default lr"}
    settings["launcher_peak_rss_mb"] = round(rss_mb(), 1)
    return {"benchmark": "device_adapt", "settings": settings, "environment": environment(),
            "workloads": reports, "targets": {**targets, "all_met": all(targets.values())}}


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
    """A readable summary: one row per workload, end to end first."""
    head = (f"{'workload':<34} {'e2e ours':>9} {'e2e torch':>9} {'speedup':>7} {'step ours':>9} {'step torch':>10} "
            f"{'embed x':>7} {'predict x':>9} {'RSS ours':>8} {'RSS torch':>9} {'bundle':>9}")
    rows = [head, "-" * len(head)]
    for r in result["workloads"]:
        ours, base, speed = r["ours"], r["baseline"], r["speedup"]
        rows.append(f"{r['name']:<34} {ours['end_to_end_ms']:>7.1f}ms {base['end_to_end_ms']:>7.1f}ms "
                    f"{speed['end_to_end']:>6.2f}x {ours['adapt_step_ms']:>7.3f}ms {base['adapt_step_ms']:>8.3f}ms "
                    f"{speed['embed']:>6.2f}x {speed['predict']:>8.2f}x {ours['peak_rss_mb']:>6.0f}MB "
                    f"{base['peak_rss_mb']:>7.0f}MB {r['bundle']['total_bytes'] / MB:>7.2f}MB")
    rows.append("targets: " + ", ".join(f"{k}={v}" for k, v in result["targets"].items()))
    return "\n".join(rows)


def log(message: str) -> None:
    print(f"[device_adapt] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON only (no table)")
    parser.add_argument("--repeats", type=int, default=None, help="measured runs per side (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a CI smoke run")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1, got {args.repeats}")
    return args


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"setup": setup_worker, "device": device_worker,
                                                                   "torch": torch_worker}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(args.job.read_text()))))
        return 0
    repeats = args.repeats or (1 if args.quick else 5)
    result = run_benchmark(QUICK if args.quick else FULL, repeats, args.quick)
    if not args.json:
        print(render_table(result))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
