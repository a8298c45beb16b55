"""The adapted state directory (`mtl adapt … --out ADAPTED`, docs/bundle.md): write it atomically, read it back.

`bundle.mtlb` (the bundle, so the directory is self-contained), `state.npz` (`weight` (N, D), `bias`
(N,), support `features` (M, D), `labels` (M,), and for a bundle with batch statistics the
normalised support `images` (M, C, H, W), embedded again when a class is added; with a context, the adapted
`context` (d,) and the images too) and `adapted.json`
(class names in label order, when each was added, steps, lr, losses, final loss, the sha256 of `bundle.mtlb` and
of `state.npz`).
Both hashes are checked before either file is used; every file is read with a size cap.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path

import numpy as np

from mtl.device_runtime import jsonio
from mtl.device_runtime.adapter import AdaptResult
from mtl.device_runtime.archive import MAX_MANIFEST_BYTES, MAX_TOTAL_BYTES
from mtl.device_runtime.atomic import replace_dir, write_files
from mtl.device_runtime.bundle import Bundle
from mtl.device_runtime.errors import BundleError
from mtl.device_runtime.files import read_regular

SCHEMA = "mtl-adapted/2"  # /1 carried no hash of state.npz
MAX_STATE_BYTES = 4 << 30
ADAPTED_JSON, STATE, BUNDLE = "adapted.json", "state.npz", "bundle.mtlb"


def save_adapted(path: Path, bundle: Bundle, weight: np.ndarray, bias: np.ndarray, features: np.ndarray,
                 labels: np.ndarray, result: AdaptResult, images: np.ndarray | None = None,
                 context: np.ndarray | None = None, added: dict[str, str] | None = None,
                 variants: dict[str, int] | None = None) -> None:
    """Write the three files into a fresh directory and swap it in for `path` (never half-updated)."""
    bundle_bytes = bundle.to_zip_bytes()
    state = io.BytesIO()
    extra = {} if images is None else {"images": images.astype(np.float32)}
    if context is not None:
        extra["context"] = context.astype(np.float32)
    np.savez(state, weight=weight, bias=bias, features=features, labels=labels.astype(np.int64), **extra)
    added = {name: (added or {}).get(name, "") for name in result.classes}
    per_class = {name: int((variants or {}).get(name, 0)) for name in result.classes if (variants or {}).get(name)}
    meta = {"schema": SCHEMA, **result.to_dict(), "added": added, "class_variants": per_class,
            "bundle_sha256": hashlib.sha256(bundle_bytes).hexdigest(),
            "state_sha256": hashlib.sha256(state.getvalue()).hexdigest()}
    files = {BUNDLE: bundle_bytes, STATE: state.getvalue(),
             ADAPTED_JSON: (jsonio.dumps(meta, indent=2) + "\n").encode("utf-8")}
    replace_dir(path, lambda tmp: write_files(tmp, files), marker=ADAPTED_JSON)


def load_adapted(path: Path, threads: int) -> tuple[Bundle, dict[str, np.ndarray], AdaptResult, dict[str, str],
                                                    dict[str, int]]:
    """An adapted state directory → (its verified bundle, the state arrays, the recorded `AdaptResult`, when each
    class was added: UTC ISO 8601, "" where unknown, and how many of each class's examples are variants)."""
    if not (path / ADAPTED_JSON).is_file():
        raise BundleError(f"{path} is not an adapted state (no {ADAPTED_JSON}); create one with mtl adapt --out")
    meta = _read_meta(path / ADAPTED_JSON)
    bundle_bytes = _read_hashed(path / BUNDLE, MAX_TOTAL_BYTES, meta["bundle_sha256"])
    state_bytes = _read_hashed(path / STATE, MAX_STATE_BYTES, meta["state_sha256"])
    bundle = Bundle.from_bytes(bundle_bytes, name=str(path / BUNDLE), intra_op_num_threads=threads)
    result = AdaptResult(tuple(meta["classes"]), meta["support"], meta["steps"], meta["lr"],
                         tuple(meta["losses"]), meta["final_loss"], meta.get("context_steps", 0),
                         tuple(meta.get("context_losses", ())), meta.get("variants", 0))
    spec = bundle.input_spec
    image_shape = (spec.channels, spec.size, spec.size) if bundle.keeps_images else None
    context = None if bundle.context is None else bundle.context.dim
    state = _read_state(state_bytes, path / STATE, len(result.classes), bundle.feature_dim, image_shape, context)
    added, variants = meta.get("added", {}), meta.get("class_variants", {})
    counts = {name: int(np.sum(state["labels"] == i)) for i, name in enumerate(result.classes)}
    if any(variants.get(name, 0) >= counts[name] for name in result.classes) or \
            sum(variants.values()) != result.variants:
        raise BundleError(f"{path / ADAPTED_JSON}: class_variants and variants disagree with the examples in state.npz")
    return (bundle, state, result, {name: added.get(name, "") for name in result.classes},
            {name: int(v) for name, v in variants.items() if name in counts})


def _read_hashed(file: Path, limit: int, expected: str) -> bytes:
    """A file of the adapted state, whose sha256 must be the one `adapted.json` recorded."""
    data = read_regular(file, limit, "adapted-state file", BundleError)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise BundleError(f"{file}: sha256 {digest} does not match {ADAPTED_JSON} ({expected}); the file is "
                          "corrupt or was changed")
    return data


def _read_meta(file: Path) -> dict:
    meta = jsonio.loads(read_regular(file, MAX_MANIFEST_BYTES, "adapted-state file", BundleError), str(file),
                        BundleError)
    if isinstance(meta, dict) and meta.get("schema") == "mtl-adapted/1":
        raise BundleError(f"{file}: made by an earlier mtl (mtl-adapted/1, whose state.npz carries no hash); "
                          "run mtl adapt again")
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise BundleError(f"{file}: not an adapted state of schema {SCHEMA!r}")
    checks = {"classes": lambda v: isinstance(v, list) and len(v) >= 2 and len(set(v)) == len(v)
              and all(isinstance(c, str) and c and c.isprintable() for c in v),
              "support": lambda v: isinstance(v, int) and v > 0,
              "steps": lambda v: isinstance(v, int) and v >= 0,
              "lr": lambda v: isinstance(v, int | float) and v > 0,
              "losses": lambda v: isinstance(v, list) and all(isinstance(x, int | float) for x in v),
              "final_loss": lambda v: isinstance(v, int | float) and math.isfinite(v),
              "bundle_sha256": lambda v: isinstance(v, str) and len(v) == 64,
              "state_sha256": lambda v: isinstance(v, str) and len(v) == 64}
    optional = {"added": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, str)
                                                               and len(t) <= 40 and t.isprintable()
                                                               for k, t in v.items()),
                "context_steps": lambda v: isinstance(v, int) and v >= 0,
                "variants": lambda v: isinstance(v, int) and v >= 0,
                "class_variants": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(n, int)
                                                                        and not isinstance(n, bool) and n > 0
                                                                        for k, n in v.items()),
                "context_losses": lambda v: isinstance(v, list) and all(isinstance(x, int | float) for x in v)}
    for key, ok in optional.items():
        if key in meta and (isinstance(meta[key], bool) or not ok(meta[key])):
            raise BundleError(f"{file}: invalid {key}: {meta[key]!r:.60}")
    for key, ok in checks.items():
        if key not in meta:
            raise BundleError(f"{file}: missing key {key!r}")
        if isinstance(meta[key], bool) or not ok(meta[key]):
            raise BundleError(f"{file}: invalid {key}: {meta[key]!r:.60}")
    return meta


def _read_state(data: bytes, file: Path, n: int, dim: int, image_shape: tuple[int, int, int] | None,
                context: int | None = None) -> dict[str, np.ndarray]:
    """`state.npz` bytes → arrays, checked against the class count n, the feature dim, (kept images) the shape of
    one support image and (a context) its size."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            state = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{file}: not a readable .npz archive: {exc}") from None
    m = len(state["labels"]) if "labels" in state else -1
    shapes = {"weight": (n, dim), "bias": (n,), "features": (m, dim), "labels": (m,)}
    if image_shape is not None:
        shapes["images"] = (m, *image_shape)
    if context is not None:
        shapes["context"] = (context,)
    for key, shape in shapes.items():
        if key not in state:
            raise BundleError(f"{file}: missing array {key!r}")
        if state[key].shape != shape:
            raise BundleError(f"{file}: {key} has shape {state[key].shape}, expected {shape}")
    labels = state["labels"]
    if not np.issubdtype(labels.dtype, np.integer) or set(np.unique(labels).tolist()) != set(range(n)):
        raise BundleError(f"{file}: labels must be integers covering every class 0..{n - 1}")
    for key in [k for k in ("weight", "bias", "features", "images", "context") if k in shapes]:
        if not np.issubdtype(state[key].dtype, np.floating) or not np.isfinite(state[key]).all():
            raise BundleError(f"{file}: {key} must hold finite floats")
        state[key] = state[key].astype(np.float32)
    state["labels"] = labels.astype(np.int64)
    return state
