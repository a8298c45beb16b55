"""`mtl pretrain` and `mtl calibrate`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors
from mtl.cli.options import (
    BackboneOptionOpt,
    CalibrateOpt,
    ConfigOpt,
    DataOpt,
    DeviceOpt,
    OutOpt,
    QuietOpt,
    ResumeOpt,
    SplitByOpt,
    SplitOpt,
    enum_value,
    fractions,
    key_values,
)
from mtl.cli.progress import progress_bars
from mtl.device_runtime.schema import CLASSIFIER_HEADS

if TYPE_CHECKING:
    from mtl.pipeline.train.calibrate import Calibration

console = Console()


BackboneOpt = Annotated[str | None, typer.Option(
    "--backbone", help="Feature extractor: a registered backbone (conv4, resnet12, resnet18, mobilenet_v3_small, …; "
                       "an unknown name lists them all).")]


HeadChoice = StrEnum("HeadChoice", [(kind, kind) for kind in CLASSIFIER_HEADS])  # the heads a user can choose


@handle_errors
def pretrain(
    data: DataOpt = None,
    backbone: BackboneOpt = None,
    backbone_option: BackboneOptionOpt = None,
    head: Annotated[HeadChoice | None, typer.Option(help="Classifier head.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training classes.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (cosine decay).")] = None,
    image_size: Annotated[int | None, typer.Option(help="Resize images to this side (source default).")] = None,
    rotations: Annotated[bool | None, typer.Option("--rotations/--no-rotations",
                                                   help="Add 90/180/270° rotations as new classes.")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Random affine jitter.")] = None,
    augment_rotate: Annotated[float | None, typer.Option(help="Jitter: rotation, ± degrees (default 10).")] = None,
    augment_scale: Annotated[float | None, typer.Option(help="Jitter: scale, 1 ± this (default 0.1).")] = None,
    augment_shift: Annotated[float | None, typer.Option(help="Jitter: shift, ± this of the size (0.1).")] = None,
    augment_shear: Annotated[float | None, typer.Option(help="Jitter: shear, ± this (default 0; per-axis scale "
                                                        "when set).")] = None,
    augment_elastic: Annotated[float | None, typer.Option(help="Jitter: elastic distortion, control points "
                                                          "move ± this of the size (default 0).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="SGD weight decay (default 5e-4).")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Distil from this pretrain run or checkpoint (same split and "
                                                 "classes): born-again training.")] = None,
    distill_weight: Annotated[float | None, typer.Option(help="With --teacher: weight of the distillation term "
                                                         "(default 0.5; the rest is cross-entropy).")] = None,
    distill_temperature: Annotated[float | None, typer.Option(help="With --teacher: softmax temperature of "
                                                              "both sides (default 4).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and data order.")] = None,
    split: SplitOpt = None,
    split_by: SplitByOpt = None,
    train_classes: Annotated[int | None, typer.Option(help="Train on a seeded subset of this many of the training "
                                                      "split's classes (a data-scaling study; validation and "
                                                      "test unchanged).")] = None,
    calibrate_episodes: CalibrateOpt = None,
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
                         backbone_options=key_values(backbone_option, "--backbone-option", parse_json=True),
                         epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
                         rotations=rotations, augment=augment, augment_rotate=augment_rotate,
                         augment_scale=augment_scale, augment_shift=augment_shift, augment_shear=augment_shear,
                         augment_elastic=augment_elastic,
                         weight_decay=weight_decay, seed=seed, teacher=None if teacher is None else str(teacher),
                         distill_weight=distill_weight, distill_temperature=distill_temperature,
                         split=fractions(split), split_by=split_by, train_classes=train_classes,
                         calibrate_episodes=calibrate_episodes, out=None if out is None else str(out),
                         device=enum_value(device), resume=resume or None,
                         download=download or None)
    with progress_bars(not quiet) as on_step:
        result = run_pretrain(cfg, on_step)
    console.print(f"pretrained {cfg.backbone} for {result.epochs} epochs: best validation "
                  f"{cfg.val_ways}-way {cfg.val_shots}-shot accuracy {100 * result.best_val_accuracy:.2f}% "
                  f"→ {result.run_dir}/best.safetensors", highlight=False)
    if result.calibration is not None:
        console.print(calibration_line(result.calibration), highlight=False)


def calibration_line(c: Calibration) -> str:
    how = f"{c.steps} SGD steps at lr {c.lr:g}" if c.searched else f"{c.steps} steps as trained"
    t = c.temperature
    temps = sorted({t.at(n, k) for n in t.ways for k in t.shots})
    shown = f"{temps[0]:.3g}" if len(temps) == 1 else f"{temps[0]:.3g}–{temps[-1]:.3g}"
    return (f"device settings (validation classes): {how}, temperature {shown} "
            f"(validation accuracy {100 * c.val_accuracy:.2f}%, ECE {c.ece_before:.3f} → {c.ece_after:.3f})")


@handle_errors
def calibrate(
    run: Annotated[Path, typer.Argument(help="A run directory (its best checkpoint) or a checkpoint file.")],
    episodes: Annotated[int, typer.Option(min=1, help="Validation episodes per cell.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the validation episodes.")] = 0,
    device: DeviceOpt = None,
) -> None:
    """Choose a checkpoint's device settings on its validation classes — the head's SGD steps and step size,
    and the temperature of its probabilities — and write them into it (pretrain and meta-train do this at
    the end; run it again after changing the checkpoint)."""
    from mtl.pipeline.train.calibrate import calibrate_checkpoint

    file, result = calibrate_checkpoint(run, episodes, seed, enum_value(device) or "auto")
    console.print(f"{calibration_line(result)} → {file}", highlight=False)
