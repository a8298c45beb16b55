"""`mtl export`: checkpoint → deploy bundle, validated before it is reported as a success.

Each graph is checked by `onnx.checker` with full shape inference, must use only the standard ONNX
domain, and is run in onnxruntime against PyTorch on inputs of a SECOND shape (other B, N, M than
traced); any output beyond tolerance fails the export with one report naming every mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from device_runtime.atomic import replace_dir
from device_runtime.signing import SIGNATURE, check_private_key, sign_manifest
from exporters.deploy_model import DeployModel, deploy_model
from exporters.graphs import GraphSpec, adapt_step_fn, example_inputs, export_graph, graph_specs, predict_fn
from pipeline.atomic import atomic_write_bytes
from pipeline.errors import CheckpointError, ConfigError, MtlError
from pipeline.train.checkpoint import load_checkpoint

SCHEMA = "mtl-bundle/1"
STANDARD_DOMAINS = {"", "ai.onnx"}
TRACE_SIZES = {"B": 2, "N": 5, "M": 10}
CHECK_SIZES = {"B": 3, "N": 3, "M": 9}


class ExportError(MtlError):
    """The exported graphs failed validation (checker, domains or parity with PyTorch)."""


@dataclass
class ExportReport:
    path: str
    files: dict[str, int] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)


def export_bundle(checkpoint: str | Path, out: str | Path, *, single_file: bool = False, opset: int = 18,
                  adapt: str | None = None, tolerance: float = 1e-4, sign: str | Path | None = None) -> ExportReport:
    """Export `checkpoint` to a bundle directory (or `.mtlb` zip) at `out`; returns what was checked.
    `sign`: an Ed25519 private key file; the bundle then carries `manifest.sig`."""
    if not 13 <= opset <= 21:
        raise ConfigError(f"--opset must be between 13 and 21, got {opset}")
    if sign is not None:
        check_private_key(sign)  # a bad key fails now, not after the slow export
    ckpt = load_checkpoint(checkpoint)
    dm = deploy_model(ckpt, adapt)
    if dm.batch_statistics:
        raise CheckpointError(f"{ckpt.path}: its extractor normalises with per-task batch statistics "
                              "(transductive BatchNorm), which a device embedding one image at a time cannot "
                              "reproduce; export a pretrained (`mtl pretrain`) or `--algorithm mtl` checkpoint")
    specs = graph_specs(dm)
    torch.manual_seed(0)
    models = _export_all(dm, specs, opset)
    report = ExportReport(str(out))
    for name, model in models.items():
        report.ops[name] = _check_graph(name, model)
    report.parity = _check_parity(dm, specs, models, tolerance)
    files = {f"{n}.onnx": m.SerializeToString() for n, m in models.items()}
    files["init.npz"] = _npz(dm.init_arrays())
    manifest = _manifest(dm, specs, files, opset, hashlib.sha256(Path(ckpt.path).read_bytes()).hexdigest())
    manifest["producer"].update(data=ckpt.meta["config"]["data"], test_classes=list(ckpt.meta["splits"]["test"]))
    files = {"manifest.json": json.dumps(manifest, indent=2).encode(), **files}
    if sign is not None:
        files[SIGNATURE] = sign_manifest(files["manifest.json"], sign)
    report.path = str(_write(Path(out), files, single_file))
    report.files = {n: len(b) for n, b in files.items()}
    return report


def _export_all(dm: DeployModel, specs: dict[str, GraphSpec], opset: int) -> dict[str, onnx.ModelProto]:
    body = dm.body.eval()
    for p in body.parameters():
        p.requires_grad_(False)
    return {
        "embed": export_graph(body, specs["embed"], example_inputs(specs["embed"], TRACE_SIZES), opset, False),
        "adapt_step": export_graph(adapt_step_fn(dm), specs["adapt_step"],
                                   example_inputs(specs["adapt_step"], TRACE_SIZES), opset, True),
        "predict": export_graph(predict_fn(dm), specs["predict"], example_inputs(specs["predict"], TRACE_SIZES),
                                opset, True),
    }


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


def _check_parity(dm: DeployModel, specs: dict[str, GraphSpec], models: dict[str, onnx.ModelProto],
                  tolerance: float) -> dict[str, float]:
    """Run every graph in onnxruntime and in PyTorch on a second input shape; one error lists all misses."""
    torch_fns = {"embed": dm.body, "adapt_step": adapt_step_fn(dm), "predict": predict_fn(dm)}
    worst, misses = {}, []
    for name, spec in specs.items():
        args = example_inputs(spec, CHECK_SIZES, seed=1)
        session = ort.InferenceSession(models[name].SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: a.numpy() for (n, _, _), a in zip(spec.inputs, args, strict=True)})
        with torch.no_grad():
            want = torch_fns[name](*args)
        want = want if isinstance(want, tuple) else (want,)
        for (out_name, _, _), g, w in zip(spec.outputs, got, want, strict=True):
            diff = float(np.abs(g - w.detach().numpy()).max()) if g.size else 0.0
            worst[f"{name}.{out_name}"] = diff
            if not diff <= tolerance * max(1.0, float(np.abs(w.detach().numpy()).max())):
                misses.append(f"{name}.{out_name}: max |onnx − torch| = {diff:.3g}")
    if misses:
        raise ExportError("exported graphs differ from PyTorch beyond tolerance " f"{tolerance}: " + "; ".join(misses))
    return worst


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()})
    return buffer.getvalue()


def _manifest(dm: DeployModel, specs: dict[str, GraphSpec], files: dict[str, bytes], opset: int,
              checkpoint_sha: str) -> dict:
    arrays = dm.init_arrays()
    return {
        "schema": SCHEMA,
        "producer": {"mtl": version("mtl"), "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                     "algorithm": dm.algorithm, "checkpoint_sha256": checkpoint_sha},
        "input": dm.input_spec.to_dict(),
        "feature_dim": dm.feature_dim,
        "head": {"type": dm.learner.spec.head, "init": dm.learner.spec.head_init},
        "adapt": {"steps": dm.steps, "lr": dm.lr, "learned_lr": bool(dm.learner.spec.learn_lr)},
        "opset": opset,
        "graphs": {name: spec.to_manifest() for name, spec in specs.items()},
        "init": {"file": "init.npz", "arrays": {k: list(np.shape(v)) for k, v in arrays.items()}},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }


def _write(out: Path, files: dict[str, bytes], single_file: bool) -> Path:
    """Write the bundle atomically: one zip renamed into place, or a temp directory swapped in."""
    if single_file:
        out = out if out.suffix == ".mtlb" else out.with_name(out.name + ".mtlb")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        atomic_write_bytes(out, buffer.getvalue())
        return out

    def fill(staging: Path) -> None:
        for name, data in files.items():
            (staging / name).write_bytes(data)

    replace_dir(out, fill, marker="manifest.json")  # an unrelated non-empty directory is never replaced
    return out
