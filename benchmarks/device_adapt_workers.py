"""The three worker processes of `benchmarks/device_adapt.py`, each run as `python THIS_FILE WORKER JOB.json`.

- `setup`: a randomly initialised model → pretrain checkpoint → float and int8 bundles; the PNGs.
- `device`: ours — `device_runtime` (numpy + onnxruntime + Pillow, one intra-op thread); it must
  never import torch, and checks so.
- `torch`: the baseline — PyTorch eager, one thread, doing the same work with the trainer's code.

Each prints one JSON object on stdout; the launcher compares them (see device_adapt.py).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))

from device_adapt_images import calibration_images, write_images  # noqa: E402  (a sibling file; torch-free)

if TYPE_CHECKING:  # torch is imported lazily: the device worker runs this file and must never load it
    import torch

    from mtl.exporters.deploy_model import DeployModel

T = TypeVar("T")
QUERY_BATCH = 25
MB = 1024 * 1024
TARGET_SPEEDUP, TARGET_RSS_MB, TARGET_BUNDLE_BYTES = 3.0, 120.0, 1 * MB
TIMES = ("load_s", "first_run_s", "preprocess_s", "embed_s", "adapt_step_s", "end_to_end_s", "predict_s")


@dataclass(frozen=True)
class Workload:
    """One measured setting. `images`: real `omniglot` drawings (105×105 1-bit PNGs) or `synthetic` 8-bit
    PNGs of side `png_size` (device_adapt_images.py); both sides resize them to `size`."""

    backbone: str
    channels: int
    size: int
    ways: int
    shots: int
    steps: int = 10
    queries: int = QUERY_BATCH
    png_size: int = 0
    images: str = "synthetic"

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.size}x{self.size}x{self.channels}-{self.ways}way-{self.shots}shot"


FULL = (Workload("conv4", 1, 28, 5, 5, png_size=105, images="omniglot"),
        Workload("conv4", 1, 28, 20, 5, png_size=105, images="omniglot"),
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
    """One warm-up run, then `repeats` runs; the median of every time, the rest from the last run.

    `peak_rss_mb` is the peak after the warm-up run: a process that loads the model once, adapts once and
    predicts once, as a device does. The later runs load the model again each time, and the allocator keeps
    some of what the earlier copies freed, so the peak after all runs (`peak_rss_mb_all_runs`) is higher
    than anything a device process sees; it is reported beside it."""
    once()
    one_pass = rss_mb()
    runs = [once() for _ in range(repeats)]
    medians = {key: statistics.median(run[key] for run in runs) for key in TIMES}
    return {**runs[-1], **medians, "peak_rss_mb": one_pass, "peak_rss_mb_all_runs": rss_mb()}


# ---------------------------------------------------------------- ours: the device worker (no torch)


def device_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Everything the device does, measured in this torch-free process."""
    from mtl.device_runtime.bundle import Bundle

    imported_mb = rss_mb()
    result = repeat(lambda: device_once(job, lambda: Bundle.load(job["bundle"], intra_op_num_threads=1)),
                    job["repeats"])
    if "torch" in sys.modules:
        raise RuntimeError("the device worker imported torch; the device path must run without it")
    return {**result, "vm_hwm_mb": hwm_mb(), "rss_after_imports_mb": imported_mb, "torch_imported": False,
            "threads": {"onnxruntime_intra_op": 1, "onnxruntime_inter_op": 1}}


def device_once(job: dict[str, Any], load: Callable[[], Any]) -> dict[str, Any]:
    """One full pass of the device path; returns its times and what it computed."""
    from mtl.device_runtime.adapter import Adapter

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
    """Mean seconds of one adaptation step on the support features (M, D), through the device runtime's own
    loop (`head_trajectory`, with the bundle's step sizes, meta-learned ones included)."""
    from mtl.device_runtime.adapter import default_lr, head_trajectory

    trajectory = head_trajectory(bundle, features, labels, int(labels.max()) + 1, steps, default_lr(bundle))
    next(trajectory)  # the initial head: not a step
    start = time.perf_counter()
    for _ in trajectory:
        pass
    return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------- baseline: PyTorch eager worker


def torch_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The same work in PyTorch eager, single-threaded, measured in its own process."""
    import torch

    torch.set_num_threads(1)
    import mtl.exporters.graphs  # noqa: F401  (imported before the runs: imports are not what is timed)
    from mtl.pipeline.train.checkpoint import load_checkpoint

    imported_mb = rss_mb()
    result = repeat(lambda: torch_once(job, lambda: load_checkpoint(job["checkpoint"])), job["repeats"])
    return {**result, "vm_hwm_mb": hwm_mb(), "rss_after_imports_mb": imported_mb,
            "threads": {"torch_intra_op": torch.get_num_threads(), "torch": torch.__version__}}


def torch_once(job: dict[str, Any], load: Callable[[], Any]) -> dict[str, Any]:
    """One full pass of the PyTorch path; returns its times and what it computed."""
    from mtl.exporters.deploy_model import deploy_model

    times: dict[str, Any] = {}
    dm, times["load_s"] = timed(lambda: deploy_model(load()))
    classes = support_classes(job["support"])
    paths = [p for files in classes.values() for p in files]
    batch = job["embed_batch"]
    _, times["first_run_s"] = timed(lambda: torch_embed(dm, torch_images(dm, paths[:1]), batch))
    images, times["preprocess_s"] = timed(lambda: torch_images(dm, paths))
    features, times["embed_s"] = timed(lambda: torch_embed(dm, images, batch))
    times["adapt_step_s"] = torch_step_time(dm, features, torch_labels(classes), job["steps"])
    (head, losses), times["end_to_end_s"] = timed(lambda: torch_adapt(dm, classes, job["steps"], batch))
    predicted, times["predict_s"] = timed(lambda: torch_predict(dm, head, job["queries"], list(classes), batch))
    return {**times, "loss_before": losses[0], "final_loss": losses[-1], "predicted": predicted}


def torch_images(dm: DeployModel, paths: list[str]) -> torch.Tensor:
    """PNG files → normalised float32 (B, C, H, W): Pillow decode as in training, then `normalize`."""
    import torch

    from mtl.pipeline.data import load_image
    from mtl.pipeline.train.common import normalize

    return normalize(torch.from_numpy(np.stack([load_image(p, dm.input_spec) for p in paths])), dm.input_spec)


def torch_embed(dm: DeployModel, images: torch.Tensor, batch: int) -> torch.Tensor:
    """Images (B, C, H, W) → features (B, D) with the frozen body in eval mode, `batch` images per forward
    (`Bundle.embed`'s default, which the setup worker reads: this process never imports onnxruntime)."""
    import torch

    with torch.no_grad():
        return torch.cat([dm.body.eval()(chunk) for chunk in images.split(batch)])


def torch_labels(classes: dict[str, list[str]]) -> torch.Tensor:
    """Class-major labels (M,) int64 of the support set."""
    import torch

    return torch.repeat_interleave(torch.arange(len(classes)), torch.tensor([len(f) for f in classes.values()]))


def torch_step_time(dm: DeployModel, features: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Mean seconds of one eager `adapt_step_fn` call on the support features (M, D)."""
    from mtl.exporters.graphs import adapt_step_fn

    weight, bias, lr_weight, lr_bias = torch_head(dm, features, labels, int(labels.max()) + 1)
    step = adapt_step_fn(dm)
    start = time.perf_counter()
    for _ in range(steps):
        weight, bias, _ = step(weight, bias, features, labels, lr_weight, lr_bias)
    return (time.perf_counter() - start) / steps


def torch_head(dm: DeployModel, features: torch.Tensor, labels: torch.Tensor,
               ways: int) -> tuple[torch.Tensor, ...]:
    """The head (W (N, D), b (N,)) by the learner's rule and its step sizes (1, D), (1,): the learner's own (the
    meta-learned ones of a Meta-SGD model), as the bundle ships them."""
    import torch

    p = dm.learner.state_params()
    head = dm.learner.init_head(p, features, labels, ways)
    sizes = dm.learner.step_sizes(p)
    if isinstance(sizes, dict):
        lr_weight, lr_bias = sizes["head.weight"].detach(), sizes["head.bias"].detach()
    else:
        lr_weight, lr_bias = torch.full((1, features.shape[1]), float(sizes)), torch.full((1,), float(sizes))
    return head["head.weight"].detach(), head["head.bias"].detach(), lr_weight, lr_bias


def torch_adapt(dm: DeployModel, classes: dict[str, list[str]], steps: int,
                batch: int) -> tuple[tuple[torch.Tensor, torch.Tensor], list[float]]:
    """End to end: decode + embed each class, init the head, steps + 1 eager steps → (head, losses)."""
    import torch

    from mtl.exporters.graphs import adapt_step_fn

    features = torch.cat([torch_embed(dm, torch_images(dm, files), batch) for files in classes.values()])
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
                  classes: list[str], batch: int) -> list[str]:
    """Query PNGs → predicted class names (decode, embed, head softmax)."""
    import torch

    from mtl.exporters.graphs import predict_fn

    features = torch_embed(dm, torch_images(dm, paths), batch)
    with torch.no_grad():
        probabilities = predict_fn(dm)(*head, features)
    return [classes[i] for i in probabilities.argmax(dim=1).tolist()]


# ---------------------------------------------------------------- setup: the bundles and the PNGs


def make_bundle(w: Workload, work: Path, omniglot: Path, quantize: bool = False) -> tuple[Path, dict[str, Any]]:
    """A randomly initialised model → pretrain checkpoint → exported bundle directory (`quantize`: with an
    int8 extractor); its sizes."""
    import torch

    from mtl.device_runtime.archive import zip_bytes
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.config import config_to_dict
    from mtl.pipeline.models import ModelSpec, build_model
    from mtl.pipeline.train.checkpoint import Checkpoint, save_checkpoint
    from mtl.pipeline.train.pretrain import PretrainConfig

    torch.manual_seed(0)
    spec = ModelSpec(backbone=w.backbone, in_channels=w.channels, image_size=w.size, n_classes=64)
    config = PretrainConfig(data="random-init", backbone=w.backbone, image_size=w.size, epochs=1, device="cpu")
    meta = {"kind": "pretrain", "config": config_to_dict(config), "model": spec.to_dict(),
            "input": input_spec(w).to_dict(), "splits": {"train": [], "val": [], "test": []},
            "data": {"scheme": "random-init"}, "epoch": 0}
    checkpoint = work / "pretrain.safetensors"
    save_checkpoint(checkpoint, Checkpoint(meta, build_model(spec).state_dict()))
    options = {}
    if quantize:
        calibration = calibration_images(w.images, w.channels, w.png_size or w.size, input_spec(w), w.ways,
                                         omniglot=omniglot)
        options = {"quantize": "int8", "calibration": calibration}
    report = export_bundle(checkpoint, work / ("bundle-int8" if quantize else "bundle"), **options)
    files = {name: (Path(report.path) / name).read_bytes() for name in report.files}
    return checkpoint, {"path": report.path, "files": report.files, "total_bytes": sum(report.files.values()),
                        "mtlb_bytes": len(zip_bytes(files))}


def input_spec(w: Workload) -> Any:
    """Omniglot's preprocessing for grey inputs (inverted strokes), mini-ImageNet's for RGB."""
    from mtl.pipeline.data import InputSpec
    from mtl.pipeline.data.mini_imagenet import IMAGENET_MEAN, IMAGENET_STD

    if w.channels == 1:
        return InputSpec(size=w.size, channels=1, invert=True)
    return InputSpec(size=w.size, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def setup_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The torch-side preparation, in its own process so that the launcher stays small (see `rss_mb`)."""
    w, work, omniglot = Workload(**job["workload"]), Path(job["work"]), Path(job["omniglot"])
    checkpoint, bundle = make_bundle(w, work, omniglot)
    int8 = make_bundle(w, work, omniglot, quantize=True)[1]
    support, queries = write_images(w.images, w.ways, w.shots, w.queries, w.channels, w.png_size or w.size, work,
                                    omniglot)
    from mtl.device_runtime.bundle import EMBED_BATCH

    return {"bundle": bundle.pop("path"), "bundle_info": bundle, "bundle_int8": int8.pop("path"),
            "bundle_int8_info": int8, "checkpoint": str(checkpoint), "support": str(support), "queries": queries,
            "embed_batch": EMBED_BATCH}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"setup": setup_worker, "device": device_worker,
                                                                   "torch": torch_worker}

if __name__ == "__main__":
    print(json.dumps(WORKERS[sys.argv[1]](json.loads(Path(sys.argv[2]).read_text()))))
