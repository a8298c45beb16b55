"""`Bundle`: a verified deploy bundle (docs/bundle.md) and its onnxruntime sessions, one per graph.

Loading checks, in this order and before any graph reaches onnxruntime: the archive itself (zip
members safe), the manifest schema, the sha256 of every file, each graph's inputs and outputs
against the manifest, and `init.npz` against `init.arrays`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mtl.device_runtime.archive import DirSource, ZipSource, open_source, zip_bytes
from mtl.device_runtime.atomic import atomic_write_bytes, replace_dir, write_files
from mtl.device_runtime.calibration import softmax_at
from mtl.device_runtime.errors import BundleError, ConfigError, DataError
from mtl.device_runtime.manifest import Manifest
from mtl.device_runtime.onnx_proto import GraphInfo, ProtoError, read_graph_info
from mtl.device_runtime.preprocess import ImageSource, preprocess
from mtl.device_runtime.schema import MANIFEST, STANDARD_DOMAINS, Context
from mtl.device_runtime.signing import SIGNATURE, verify_manifest

# Images per embed.onnx run. On one CPU thread a Conv-4 (28²) or ResNet-12 (84²) extractor runs just as
# fast per image at 8 as at 64 (within 3 %; benchmarks/device_adapt.py), while onnxruntime's arena keeps
# the largest batch's activations: the peak RSS of embedding 64 ResNet-12 images was 692 MB at 64,
# 292 MB at 8 (Conv-4: 108 → 83 MB). A device has little memory and gains nothing from big batches.
EMBED_BATCH = 8


class Bundle:
    """A loaded, verified bundle: `manifest`, `input_spec`, `files` (name → bytes, all but the manifest),
    `graphs` (name → `GraphInfo`), `init` (the arrays of `init.npz`, float32). Use `Bundle.load`."""

    def __init__(self, manifest_bytes: bytes, files: dict[str, bytes], *, label: str,
                 intra_op_num_threads: int = 1, signature: bytes | None = None) -> None:
        if intra_op_num_threads < 1:
            raise ConfigError(f"intra_op_num_threads must be ≥ 1, got {intra_op_num_threads}")
        self.label = label
        self.manifest = Manifest.parse(manifest_bytes)
        self.input_spec = self.manifest.input
        self.feature_dim: int = self.manifest.feature_dim
        self._manifest_bytes, self.files, self.signature = manifest_bytes, files, signature
        _check_digests(self.manifest, files)
        self.graphs = {name: _graph_info(self.manifest, name, files) for name in self.manifest.graphs}
        self.init = _load_init(self.manifest, files)
        self._sessions = {name: _session(self.graph_file(name), files, intra_op_num_threads)
                          for name in self.manifest.graphs}

    @classmethod
    def load(cls, path: str | Path, *, intra_op_num_threads: int = 1, key: str | Path | None = None) -> Bundle:
        """A bundle directory or `.mtlb` zip → verified `Bundle`; any fault raises `BundleError` naming it.
        With `key` (an Ed25519 public key file) the bundle must also carry a valid signature."""
        return cls._from_source(open_source(Path(path)), intra_op_num_threads, key)

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "<bundle bytes>", intra_op_num_threads: int = 1,
                   key: str | Path | None = None) -> Bundle:
        """A `.mtlb` zip held in memory → verified `Bundle`."""
        return cls._from_source(ZipSource(data, name), intra_op_num_threads, key)

    @classmethod
    def _from_source(cls, source: DirSource | ZipSource, threads: int, key: str | Path | None = None) -> Bundle:
        try:
            manifest_bytes = source.read(MANIFEST)
            signature = source.read_optional(SIGNATURE)
            if key is not None:  # first: an unsigned or forged manifest is not even parsed
                verify_manifest(manifest_bytes, signature, key, source.label)
            listed = Manifest.parse(manifest_bytes).files
            source.check_listed(set(listed))
            files = {name: source.read(name) for name in sorted(listed)}
        finally:
            source.close()
        return cls(manifest_bytes, files, label=source.label, intra_op_num_threads=threads, signature=signature)

    @property
    def batch_statistics(self) -> bool:
        """True when `embed.onnx` normalises with the statistics of the batch it is given (MAML-style
        transductive BatchNorm): a support set is embedded as one batch, and queries are scored together."""
        return self.manifest.batch_statistics

    @property
    def context(self) -> Context | None:
        """The context vector the device adapts inside the extractor (CAML), or None: the extractor is frozen."""
        return self.manifest.context

    @property
    def keeps_images(self) -> bool:
        """True when a support set is kept as images and embedded at adaptation, not as features once: its
        features depend on the whole set (batch statistics) or on the context adapted to it."""
        return self.batch_statistics or self.context is not None

    def graph_file(self, name: str) -> str:
        return self.manifest.graphs[name].file

    def preprocess(self, sources: Sequence[ImageSource]) -> np.ndarray:
        """Paths, encoded bytes, Pillow images or uint8 (H, W[, C]) arrays → float32 (B, C, H, W),
        exactly the training transform (`device_runtime.preprocess`)."""
        return preprocess(sources, self.input_spec)

    def embed(self, images: np.ndarray, batch_size: int = EMBED_BATCH, context: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 images (B, C, H, W) → features (B, D), `batch_size` images per run
        (all of them in one run when the bundle normalises with batch statistics). With a `context` (a bundle
        with a context section): the extractor conditioned on it, embed_prefix then embed_suffix."""
        if context is not None:
            return self.embed_suffix(self.embed_prefix(images, batch_size), context, batch_size)
        return self._batched("embed", self.check_images(images), (self.feature_dim,), batch_size)

    def embed_prefix(self, images: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
        """Normalised images (B, C, H, W) → the hidden activations (B, *context.hidden) the context conditions."""
        return self._batched("embed_prefix", self.check_images(images), self._context().hidden, batch_size)

    def embed_suffix(self, hidden: np.ndarray, context: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
        """Hidden activations (B, *context.hidden) and a context (d,) → features (B, D)."""
        phi = self._check_context(context)
        return self._batched("embed_suffix", hidden, (self.feature_dim,), batch_size, {"context": phi})

    def context_step(self, hidden: np.ndarray, labels: np.ndarray, n: int, context: np.ndarray,
                     lr: float) -> tuple[np.ndarray, float]:
        """ONE exported SGD step of the context on the support set's hidden activations (M, …) with labels (M,) in
        0..n-1: φ → (φ', support loss at φ)."""
        spec = self._context()
        labels = np.asarray(labels, dtype=np.int64)
        feeds = {"hidden": np.asarray(hidden, np.float32), "labels": labels, "onehot": _onehot(labels, n),
                 "context": self._check_context(context), "lr_context": np.full((1,), lr, np.float32)}
        new, loss = self._run("context_step", feeds, ["new_context", "loss"])
        self._check_output("context_step", new, (spec.dim,))
        self._check_output("context_step", loss.reshape(-1), (1,))
        return new.astype(np.float32, copy=False), float(loss.reshape(()))

    def _context(self) -> Context:
        if self.context is None:
            raise ConfigError(f"{self.label} has no context to adapt (its extractor is frozen)")
        return self.context

    def _check_context(self, context: np.ndarray) -> np.ndarray:
        phi = np.asarray(context, dtype=np.float32)
        if phi.shape != (self._context().dim,):
            raise DataError(f"the context must have shape ({self._context().dim},), got {phi.shape}")
        return phi

    def _batched(self, graph: str, batch: np.ndarray, shape: tuple[int, ...], batch_size: int,
                 extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the one-input `graph` over `batch` (B, …), `batch_size` at a time (all at once with batch statistics)
        → float32 (B, *shape)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        name = self.manifest.graphs[graph].inputs[0].name
        batch_size = max(len(batch), 1) if self.batch_statistics else batch_size
        parts = [self._run(graph, {name: batch[i:i + batch_size], **(extra or {})})[0]
                 for i in range(0, len(batch), batch_size)]
        out = np.concatenate(parts) if parts else np.zeros((0, *shape), np.float32)
        self._check_output(graph, out, (len(batch), *shape))
        return out.astype(np.float32, copy=False)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Normalised images as `embed` takes them: float (B, C, H, W) of the manifest's size → float32."""
        spec = self.input_spec
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (spec.channels, spec.size, spec.size):
            raise DataError(f"embed expects images (B, {spec.channels}, {spec.size}, {spec.size}), "
                            f"got shape {images.shape}")
        if not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"embed expects normalised float images (see Bundle.preprocess), got {images.dtype}")
        return images.astype(np.float32, copy=False)

    def init_head(self, features: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The head of an n-class task from its support features (M, D) and labels (M,) in 0..n-1, by the
        bundle's own rule (init_head.onnx, traced from the training head): W (N, D), b (N,)."""
        onehot = _onehot(np.asarray(labels, dtype=np.int64), n)
        weight, bias = self._run("init_head", {"features": features, "onehot": onehot}, ["weight", "bias"])
        self._check_output("init_head", weight, (n, self.feature_dim))
        self._check_output("init_head", bias, (n,))
        return weight.astype(np.float32, copy=False), bias.astype(np.float32, copy=False)

    def adapt_step(self, weight: np.ndarray, bias: np.ndarray, features: np.ndarray, labels: np.ndarray,
                   lr_weight: np.ndarray, lr_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One exported SGD step of the head: (W (N, D), b (N,)) → (W', b', loss at W, b)."""
        if self.manifest.rule != "sgd":
            raise ConfigError(f"{self.label} adapts with a learned update rule ({self.manifest.rule}); "
                              "use learned_step with its state, not step sizes")
        feeds = {"weight": weight, "bias": bias, "features": features, "labels": labels.astype(np.int64),
                 "lr_weight": lr_weight, "lr_bias": lr_bias}
        new_weight, new_bias, loss = self._run("adapt_step", feeds, ["new_weight", "new_bias", "loss"])
        self._check_output("adapt_step", new_weight, weight.shape)
        self._check_output("adapt_step", new_bias, bias.shape)
        self._check_output("adapt_step", loss.reshape(-1), (1,))
        return new_weight, new_bias, float(loss.reshape(()))

    def initial_state(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A learned update rule's state before the first step, for an N-class head: zeros (N, D, S), (N, S)."""
        size = self.manifest.state
        return np.zeros((n, self.feature_dim, size), np.float32), np.zeros((n, size), np.float32)

    def learned_step(self, weight: np.ndarray, bias: np.ndarray, features: np.ndarray, labels: np.ndarray,
                     state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float,
                                                                    tuple[np.ndarray, np.ndarray]]:
        """One step of a learned update rule (adapt.rule lstm): (W, b) and every entry's state → (W', b', loss at
        W, b, the next state)."""
        feeds = {"weight": weight, "bias": bias, "features": features, "labels": labels.astype(np.int64),
                 "state_weight": state[0], "state_bias": state[1]}
        new_weight, new_bias, loss, state_weight, state_bias = self._run(
            "adapt_step", feeds, ["new_weight", "new_bias", "loss", "new_state_weight", "new_state_bias"])
        for array, like in ((new_weight, weight), (new_bias, bias), (state_weight, state[0]), (state_bias, state[1])):
            self._check_output("adapt_step", array, like.shape)
        self._check_output("adapt_step", loss.reshape(-1), (1,))
        return new_weight, new_bias, float(loss.reshape(())), (state_weight, state_bias)

    def predict_proba(self, weight: np.ndarray, bias: np.ndarray, features: np.ndarray,
                      shots: float | None = None) -> np.ndarray:
        """Head (W (N, D), b (N,)) and features (B, D) → class probabilities (B, N). With `shots` (the
        support examples per class the head adapted on), at the bundle's calibrated temperature for N and K
        (`device_runtime.calibration`); without, at temperature 1."""
        calibration = self.manifest.calibration
        temperature = 1.0 if shots is None or calibration is None else calibration.at(len(weight), shots)
        return softmax_at(self.predict_log_proba(weight, bias, features), temperature)

    def predict_log_proba(self, weight: np.ndarray, bias: np.ndarray, features: np.ndarray) -> np.ndarray:
        """predict.onnx: head and features (B, D) → log-probabilities (B, N) at temperature 1."""
        (logp,) = self._run("predict", {"weight": weight, "bias": bias, "features": features}, ["log_probabilities"])
        self._check_output("predict", logp, (len(features), len(weight)))
        return logp.astype(np.float32, copy=False)

    def to_zip_bytes(self) -> bytes:
        """The bundle as deterministic `.mtlb` bytes (the same files always give the same bytes)."""
        return zip_bytes(self._all_files())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_zip_bytes()).hexdigest()

    def save(self, path: str | Path, single_file: bool = False) -> None:
        """Write the bundle as a `.mtlb` zip (`single_file`) or a directory, atomically either way."""
        if single_file:
            atomic_write_bytes(path, self.to_zip_bytes())
            return
        files = self._all_files()
        replace_dir(path, lambda tmp: write_files(tmp, files), marker=MANIFEST)

    def _all_files(self) -> dict[str, bytes]:
        signature = {} if self.signature is None else {SIGNATURE: self.signature}
        return {MANIFEST: self._manifest_bytes, **self.files, **signature}

    def _run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        try:
            return self._sessions[graph].run(outputs, feeds)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{self.graph_file(graph)}: onnxruntime failed: {message}") from None

    def _check_output(self, graph: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
        if tuple(array.shape) != tuple(shape):
            raise BundleError(f"{self.graph_file(graph)}: output has shape {tuple(array.shape)}, expected {shape}")


def _onehot(labels: np.ndarray, n: int) -> np.ndarray:
    onehot = np.zeros((len(labels), n), np.float32)
    onehot[np.arange(len(labels)), labels] = 1.0
    return onehot


def _check_digests(manifest: Manifest, files: dict[str, bytes]) -> None:
    for name, expected in manifest.files.items():
        actual = hashlib.sha256(files[name]).hexdigest()
        if actual != expected:
            raise BundleError(f"{name}: sha256 {actual} does not match manifest.json ({expected}); "
                              "the file is corrupt or was changed")


def _graph_info(manifest: Manifest, name: str, files: dict[str, bytes]) -> GraphInfo:
    """Parse the graph's protobuf (no onnxruntime) and check its interface against the manifest."""
    spec = manifest.graphs[name]
    try:
        info = read_graph_info(files[spec.file])
    except ProtoError as exc:
        raise BundleError(f"{spec.file}: not an ONNX model ({exc})") from None
    if info.external:  # onnxruntime would read it from a path relative to the working directory: no hash covers it
        raise BundleError(f"{spec.file}: tensor {info.external[0]!r} keeps its data outside the file (ONNX "
                          "external data); a bundle must be self-contained")
    foreign = sorted(info.domains - STANDARD_DOMAINS)
    if foreign:
        raise BundleError(f"{spec.file}: uses operators of the non-standard domain(s) {', '.join(foreign)}; "
                          f"a bundle holds standard ONNX only")
    for side, actual in (("inputs", info.inputs), ("outputs", info.outputs)):
        declared = {t.name: t for t in getattr(spec, side)}
        found = {value.name: value for value in actual}
        if set(found) != set(declared):
            raise BundleError(f"{spec.file}: graph {side} {sorted(found)} do not match manifest.json "
                              f"graphs.{name}.{side} {sorted(declared)}")
        for key, value in found.items():
            want = declared[key]
            if value.dtype is not None and value.dtype != want.dtype:
                raise BundleError(f"{spec.file}: {side[:-1]} {key!r} is {value.dtype}, manifest.json says {want.dtype}")
            if value.shape is not None and len(value.shape) != len(want.shape):
                raise BundleError(f"{spec.file}: {side[:-1]} {key!r} has rank {len(value.shape)}, manifest.json "
                                  f"says shape {list(want.shape)}")
    return info


def _load_init(manifest: Manifest, files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """`init.npz` (no pickles) → float32 arrays, exactly those of `init.arrays`, finite, with their shapes."""
    file, declared = manifest.init_file, manifest.init_arrays
    try:
        with np.load(io.BytesIO(files[file]), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, KeyError, AttributeError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{file}: not a readable .npz archive: {exc}") from None
    if set(arrays) != set(declared):
        raise BundleError(f"{file}: arrays {sorted(arrays)} do not match manifest.json init.arrays {sorted(declared)}")
    raw = sorted(key for key, array in arrays.items() if not isinstance(array, np.ndarray))
    if raw:  # np.load gives the bytes of a member that is not a .npy file
        raise BundleError(f"{file}: not a readable .npz archive: member {raw[0]!r} is not a .npy array")
    for key, array in arrays.items():
        if list(array.shape) != declared[key]:
            raise BundleError(f"{file}: {key} has shape {list(array.shape)}, manifest.json says {declared[key]}")
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array.astype(np.float32)).all():
            raise BundleError(f"{file}: {key} must hold finite floats, got {array.dtype}")  # finite as float32 too
    return {key: array.astype(np.float32) for key, array in arrays.items()}


def _session(file: str, files: dict[str, bytes], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings would reach the user's terminal as noise
    try:
        return ort.InferenceSession(files[file], sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{file}: onnxruntime cannot load it: {message}") from None
