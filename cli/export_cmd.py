"""`mtl export`: a checkpoint → a validated deploy bundle."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors

console = Console()


class ExportAdapt(StrEnum):
    head = "head"


class Quantize(StrEnum):
    int8 = "int8"


@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file or a run directory (its best).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory (or .mtlb file with --single-file).")],
    single_file: Annotated[bool, typer.Option("--single-file", help="Write one .mtlb zip.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset of the graphs.")] = 18,
    adapt: Annotated[ExportAdapt | None, typer.Option(
        help="Ship the body frozen and adapt the head only (for models whose inner loop adapted the body).")] = None,
    quantize: Annotated[Quantize | None, typer.Option(
        help="Quantize embed.onnx (static, per-channel int8 QDQ), calibrated on training images.")] = None,
    calibration: Annotated[str | None, typer.Option(
        help="Data spec to calibrate --quantize on (default: the checkpoint's data, training classes).")] = None,
    sign: Annotated[Path | None, typer.Option("--sign", help="Ed25519 private key (PEM) to sign the bundle with "
                                              "(needs the 'sign' extra).")] = None,
) -> None:
    """Export the learned initialisation, a first-order update graph and the extractor to ONNX."""
    from mtl.exporters.bundle_export import export_bundle

    report = export_bundle(checkpoint, out, single_file=single_file, opset=opset,
                           adapt=None if adapt is None else adapt.value, sign=sign,
                           quantize=None if quantize is None else quantize.value, calibration=calibration)
    size = sum(report.files.values())
    worst = max(report.parity.values())
    console.print(f"exported {checkpoint} → {report.path} ({size / 1024:.0f} KiB; graphs checked by onnx.checker, "
                  f"standard domain only; onnxruntime vs PyTorch max relative |Δ| = {worst:.2g})", highlight=False)
    if report.quantization is not None:
        q = report.quantization
        console.print(f"embed.onnx quantized to {q.scheme} (calibrated on {q.calibration_images} training images); "
                      f"against float on {q.images} more: min cosine {q.min_cosine:.4f}, max relative error "
                      f"{q.max_relative_error:.3f} — measure the accuracy with `mtl evaluate {report.path}`",
                      highlight=False)
