"""`mtl pretrain` (and, later, `mtl meta-train`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors
from mtl.cli.options import ConfigOpt, DataOpt, DeviceOpt, OutOpt, QuietOpt, ResumeOpt, enum_value
from mtl.cli.progress import progress_bars
from mtl.device_runtime.schema import HEAD_TYPES

console = Console()


BackboneOpt = Annotated[str | None, typer.Option(
    "--backbone", help="Feature extractor: a registered backbone (conv4, resnet12, resnet18, mobilenet_v3_small, …; "
                       "an unknown name lists them all).")]


HeadChoice = StrEnum("HeadChoice", [(kind, kind) for kind in HEAD_TYPES])  # the heads a bundle can carry


@handle_errors
def pretrain(
    data: DataOpt = None,
    backbone: BackboneOpt = None,
    head: Annotated[HeadChoice | None, typer.Option(help="Classifier head.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training classes.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (cosine decay).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Resize images to this side (source default).")] = None,
    rotations: Annotated[bool | None, typer.Option("--rotations/--no-rotations",
                                                   help="Add 90/180/270° rotations as new classes.")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Random affine jitter.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and data order.")] = None,
    out: OutOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    resume: ResumeOpt = False,
    download: Annotated[bool, typer.Option("--download", help="Fetch the dataset if it is missing "
                                           "(CIFAR-100 only; needs a network).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Supervised pretraining of a feature extractor on all training classes (transfer learning)."""
    from mtl.pipeline.config import resolve_config
    from mtl.pipeline.train.pretrain import PretrainConfig
    from mtl.pipeline.train.pretrain import pretrain as run_pretrain

    cfg = resolve_config(PretrainConfig, config, data=data, backbone=backbone, head=enum_value(head),
                         epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
                         rotations=rotations, augment=augment, seed=seed, out=None if out is None else str(out),
                         device=enum_value(device), resume=resume or None,
                         download=download or None)
    with progress_bars(not quiet) as on_step:
        result = run_pretrain(cfg, on_step)
    console.print(f"pretrained {cfg.backbone} for {result.epochs} epochs: best validation "
                  f"{cfg.val_ways}-way {cfg.val_shots}-shot accuracy {100 * result.best_val_accuracy:.2f}% "
                  f"→ {result.run_dir}/best.safetensors", highlight=False)
