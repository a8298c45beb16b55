"""`mtl export --quantize int8`: static int8 quantization of `embed.onnx` with onnxruntime's quantizer.

The extractor is where a device spends its time (ResNet-12 at 84×84: ~3.5 GFLOP per image), and
int8 convolutions run several times faster on CPUs with dot-product instructions (VNNI on x86,
SDOT on Arm). Activation ranges are calibrated on images of the checkpoint's TRAINING classes
(never the test classes a reported accuracy is measured on). The result is QDQ ONNX — standard
`QuantizeLinear` / `DequantizeLinear` around the convolutions, weights int8 per channel — so it
runs on stock onnxruntime, and it is checked against the float extractor on held-aside images
before the export succeeds. The head graphs stay float32: they are tiny and adapt in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mtl.pipeline.errors import ConfigError, MtlError

QUANTIZE_CHOICES = ("int8",)
CALIBRATION_BATCH = 32
MIN_COSINE = 0.99  # the int8 features must point where the float ones do, image by image


class QuantizationError(MtlError):
    """The quantized extractor strays too far from the float one."""


@dataclass(frozen=True)
class QuantizationReport:
    """How the int8 extractor compares with the float one on `images` held-aside training images."""

    scheme: str
    calibration_images: int
    images: int
    min_cosine: float
    max_relative_error: float

    def to_manifest(self, data: str) -> dict:
        return {"embed": self.scheme, "calibration": {"data": data, "images": self.calibration_images},
                "check": {"images": self.images, "min_cosine": round(self.min_cosine, 6),
                          "max_relative_error": round(self.max_relative_error, 6)}}


class _Reader:
    """onnxruntime's `CalibrationDataReader` protocol over fixed batches of one input."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self._batches = iter([{name: images[i:i + CALIBRATION_BATCH]}
                              for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_embed(model: onnx.ModelProto, calibration: np.ndarray, check: np.ndarray,
                   scheme: str = "int8") -> tuple[onnx.ModelProto, QuantizationReport]:
    """Float `embed.onnx` + normalised calibration images → (int8 QDQ model, its comparison report)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {scheme!r}")
    if len(calibration) < 1 or len(check) < 2:
        raise ConfigError(f"--quantize needs calibration images; got {len(calibration)} (+{len(check)} to check)")
    name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="mtl-quantize-") as tmp, _quiet():
        src, pre, out = (Path(tmp) / f for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model.SerializeToString())
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), _Reader(name, calibration.astype(np.float32)),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)
        quantized = _drop_unused_opsets(onnx.load_from_string(out.read_bytes()))
    report = _compare(model, quantized, check.astype(np.float32), scheme, len(calibration))
    if not report.min_cosine >= MIN_COSINE:
        raise QuantizationError(f"int8 embed.onnx strays from the float extractor: min cosine similarity "
                                f"{report.min_cosine:.4f} < {MIN_COSINE} on {report.images} training images; "
                                "export without --quantize")
    return quantized, report


def _drop_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """The optimizer behind `quant_pre_process` declares every domain it knows (com.microsoft, …) even
    where no node uses it; keep the declarations the nodes need, so the bundle says what it runs."""
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _compare(float_model: onnx.ModelProto, quantized: onnx.ModelProto, images: np.ndarray, scheme: str,
             calibrated: int) -> QuantizationReport:
    """Per-image cosine similarity and relative error of int8 features against float ones."""
    name = float_model.graph.input[0].name
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                 .run(None, {name: images})[0] for m in (float_model, quantized))
    norms = np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1)
    cosine = (want * got).sum(1) / np.maximum(norms, 1e-12)
    relative = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-12)
    return QuantizationReport(scheme, calibrated, len(images), float(cosine.min()), float(relative.max()))


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs and warns on stdout/stderr; a CLI export prints its own summary."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
