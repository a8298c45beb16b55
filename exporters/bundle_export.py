"""`mtl export`: checkpoint → deploy bundle, validated before it is reported as a success.

Each graph is checked by `onnx.checker` with full shape inference, must use only the standard ONNX
domain, and is run in onnxruntime against PyTorch on inputs of a SECOND shape (other B, N, M than
traced); any output beyond tolerance fails the export with one report naming every mismatch.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mtl.device_runtime.archive import zip_bytes
from mtl.device_runtime.atomic import check_output, replace_dir
from mtl.device_runtime.manifest import Manifest
from mtl.device_runtime.schema import BACKGROUND, MANIFEST, MAX_BACKGROUND, STANDARD_DOMAINS, GraphIO, init_arrays
from mtl.device_runtime.signing import SIGNATURE, check_private_key, sign_manifest
from mtl.exporters.deploy_model import DeployModel, deploy_model
from mtl.exporters.graphs import example_inputs, export_graph, graph_functions, graph_interfaces
from mtl.exporters.quantize import QUANTIZE_CHOICES, QuantizationReport, quantize_embed
from mtl.pipeline.atomic import atomic_write_bytes
from mtl.pipeline.errors import ConfigError, MtlError
from mtl.pipeline.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint

TRACE_SIZES = {"B": 2, "N": 5, "M": 10}
CHECK_SIZES = {"B": 3, "N": 3, "M": 9}
CALIBRATION_IMAGES, CHECK_IMAGES = 256, 64  # int8 calibration, and images held aside to check it


class ExportError(MtlError):
    """The exported graphs failed validation (checker, domains or parity with PyTorch)."""


@dataclass
class ExportReport:
    path: str
    files: dict[str, int] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)
    quantization: QuantizationReport | None = None


def calibration_images(ckpt: Checkpoint, dm: DeployModel, data_spec: str, count: int = CALIBRATION_IMAGES,
                       seed: int = 0) -> np.ndarray:
    """`count` normalised images (+ `CHECK_IMAGES` held aside), seeded, from the TRAINING classes of the
    checkpoint's split (all classes of a dataset the checkpoint never saw)."""
    from mtl.device_runtime.preprocess import normalize
    from mtl.pipeline.data import load_data

    data = load_data(data_spec, image_size=dm.input_spec.size)
    train = set(ckpt.meta.get("splits", {}).get("train", []))
    keep = [i for i, name in enumerate(data.class_names) if name in train]
    data = data.subset(keep) if keep else data
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(data))[:count + CHECK_IMAGES]
    if len(pick) < 2 * CHECK_IMAGES:
        raise ConfigError(f"--quantize needs at least {2 * CHECK_IMAGES} training images to calibrate on; "
                          f"{data_spec} has {len(pick)}")
    return normalize(data.images[np.sort(pick)].numpy(), dm.input_spec)


def export_bundle(checkpoint: str | Path, out: str | Path, *, single_file: bool = False, opset: int = 18,
                  adapt: str | None = None, tolerance: float = 1e-4, quantize: str | None = None,
                  calibration: str | np.ndarray | None = None, sign: str | Path | None = None) -> ExportReport:
    """Export `checkpoint` to a bundle directory (or `.mtlb` zip) at `out`; returns what was checked.

    `quantize="int8"` quantizes `embed.onnx` (exporters.quantize), calibrated on `calibration`: a data
    spec (default: the checkpoint's own data, training classes) or normalised images (B, C, H, W).
    `sign`: an Ed25519 private key file; the bundle then carries `manifest.sig`."""
    if not 13 <= opset <= 21:
        raise ConfigError(f"--opset must be between 13 and 21, got {opset}")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if sign is not None:
        check_private_key(sign)  # a bad key fails now, not after the slow export
    out = _bundle_path(Path(out), single_file)
    check_output(out, "--out", directory=not single_file, marker=MANIFEST)  # likewise an unwritable --out
    ckpt = load_checkpoint(checkpoint)
    dm = deploy_model(ckpt, adapt)
    if quantize is not None and dm.context is not None:
        raise ConfigError("--quantize quantizes embed.onnx, which a bundle that adapts its context does not use "
                          "after adaptation; export without --quantize, or with --adapt head")
    specs = graph_interfaces(dm)
    torch.manual_seed(0)
    models = _export_all(dm, specs, opset)
    report = ExportReport(str(out))
    for name, model in models.items():
        report.ops[name] = _check_graph(name, model)
    report.parity = _check_parity(dm, specs, models, tolerance)
    data = calibration if isinstance(calibration, str) else ckpt.meta["config"]["data"]
    if quantize is not None:
        images = calibration if isinstance(calibration, np.ndarray) else calibration_images(ckpt, dm, data)
        models["embed"], report.quantization = quantize_embed(models["embed"], images[:-CHECK_IMAGES],
                                                              images[-CHECK_IMAGES:], quantize)
        report.ops["embed"] = _check_graph("embed", models["embed"])
    files = {f"{n}.onnx": m.SerializeToString() for n, m in models.items()}
    open_set = _open_set(dm, ckpt)
    background = ckpt.device.get(BACKGROUND) if open_set and "background" in open_set else None
    files["init.npz"] = _npz({**dm.init_arrays(), **({} if background is None else {BACKGROUND: background.numpy()})})
    quantization = None if report.quantization is None else report.quantization.to_manifest(
        data if isinstance(calibration, str | None) else "<arrays>")
    manifest = _manifest(dm, ckpt, files, opset, quantization, open_set)
    files = {MANIFEST: manifest.to_json(), **files}
    if sign is not None:
        files[SIGNATURE] = sign_manifest(files["manifest.json"], sign)
    report.path = str(_write(Path(out), files, single_file))
    report.files = {n: len(b) for n, b in files.items()}
    return report


def _export_all(dm: DeployModel, specs: dict[str, GraphIO], opset: int) -> dict[str, onnx.ModelProto]:
    body = dm.body.eval()
    for p in body.parameters():
        p.requires_grad_(False)
    return {name: export_graph(fn, specs[name], example_inputs(specs[name], TRACE_SIZES), opset, trace)
            for name, (fn, trace) in graph_functions(dm).items()}


def _check_graph(name: str, model: onnx.ModelProto) -> list[str]:
    """onnx.checker (full) + shape inference + standard domains only; returns the op types used."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{name}.onnx fails the ONNX checker: {exc}") from None
    domains = {o.domain for o in model.opset_import} | {n.domain for n in model.graph.node}
    if not domains <= STANDARD_DOMAINS:
        raise ExportError(f"{name}.onnx uses non-standard ONNX domains {sorted(domains - STANDARD_DOMAINS)}")
    return sorted({n.op_type for n in model.graph.node})


def _check_parity(dm: DeployModel, specs: dict[str, GraphIO], models: dict[str, onnx.ModelProto],
                  tolerance: float) -> dict[str, float]:
    """Run every graph in onnxruntime and in PyTorch on a second input shape; one error lists all misses.

    Returns each output's max |onnx − torch| relative to the output's scale, max(1, max |torch|): float32
    rounding differs in proportion to the magnitudes involved, so that is the figure a tolerance applies to."""
    torch_fns = {name: fn for name, (fn, _) in graph_functions(dm).items()}
    worst, misses = {}, []
    for name, spec in specs.items():
        args = example_inputs(spec, CHECK_SIZES, seed=1)
        session = ort.InferenceSession(models[name].SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {t.name: a.numpy() for t, a in zip(spec.inputs, args, strict=True)})
        with torch.no_grad():
            want = torch_fns[name](*args)
        want = want if isinstance(want, tuple) else (want,)
        for out, g, w in zip(spec.outputs, got, want, strict=True):
            out_name, w = out.name, w.detach().numpy()
            scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
            diff = float(np.abs(g - w).max()) / scale if g.size else 0.0
            worst[f"{name}.{out_name}"] = diff
            if not diff <= tolerance:
                misses.append(f"{name}.{out_name}: max |onnx − torch| = {diff * scale:.3g} at scale {scale:.3g}")
    if misses:
        raise ExportError("exported graphs differ from PyTorch beyond tolerance " f"{tolerance}: " + "; ".join(misses))
    return worst


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buffer.getvalue()


def _open_set(dm: DeployModel, ckpt: Checkpoint) -> dict[str, Any] | None:
    """The checkpoint's open-set calibration, for an extractor that embeds each image alone (else None). A section
    that names a background the checkpoint does not hold (an edited file) is a `CheckpointError`."""
    if dm.batch_statistics or dm.context is not None:
        return None
    section = ckpt.meta.get("device", {}).get("open_set")
    if not section or "background" not in section:
        return section
    background, rows = ckpt.device.get(BACKGROUND), section["background"]
    if (isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= MAX_BACKGROUND or background is None
            or list(background.shape) != [rows, dm.feature_dim] or not torch.isfinite(background.float()).all()):
        raise CheckpointError(f"{ckpt.path}: its open-set calibration names a background of {rows!r:.20} classes "
                              f"that the checkpoint does not hold as {BACKGROUND} (finite, {dm.feature_dim} "
                              "features each); run mtl calibrate again")
    return section


def _manifest(dm: DeployModel, ckpt: Checkpoint, files: dict[str, bytes], opset: int,
              quantization: dict | None, open_set: dict[str, Any] | None) -> Manifest:
    """What the bundle is, with the sha256 of every file, and what made it: versions, the algorithm, the
    checkpoint's sha256, its data and its whole class split (the held-out rule of `mtl evaluate BUNDLE`)."""
    learned_lr = bool(dm.learner.spec.learn_lr)
    checkpoint_sha = hashlib.sha256(Path(ckpt.path).read_bytes()).hexdigest()
    producer = {"mtl": version("mtl"), "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                "algorithm": dm.algorithm, "checkpoint_sha256": checkpoint_sha, "data": ckpt.meta["config"]["data"],
                "splits": {part: list(ckpt.meta["splits"].get(part, [])) for part in ("train", "val", "test")}}
    return Manifest(producer=producer, input=dm.input_spec, feature_dim=dm.feature_dim,
                    head_type=dm.learner.spec.head, head_init=dm.learner.spec.head_init, steps=dm.steps,
                    lr=dm.lr, learned_lr=learned_lr, opset=opset,
                    graphs=Manifest.graphs_for(dm.input_spec, dm.feature_dim, dm.learner.state_size, dm.context),
                    init_file="init.npz",
                    init_arrays=init_arrays(dm.feature_dim, learned_lr, (open_set or {}).get("background", 0)),
                    files={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                    batch_statistics=dm.batch_statistics, quantization=quantization,
                    calibration=None if dm.learner.head.temperature.identity else dm.learner.head.temperature,
                    rule="lstm" if dm.learner.state_size else "sgd", state=dm.learner.state_size, context=dm.context,
                    open_set=open_set)


def _bundle_path(out: Path, single_file: bool) -> Path:
    """Where the bundle goes: a single file always ends in .mtlb."""
    return out if not single_file or out.suffix == ".mtlb" else out.with_name(out.name + ".mtlb")


def _write(out: Path, files: dict[str, bytes], single_file: bool) -> Path:
    """Write the bundle atomically: one zip renamed into place, or a temp directory swapped in."""
    if single_file:
        atomic_write_bytes(out, zip_bytes(files))
        return out

    def fill(staging: Path) -> None:
        for name, data in files.items():
            (staging / name).write_bytes(data)

    replace_dir(out, fill, marker=MANIFEST)  # an unrelated non-empty directory is never replaced
    return out
