"""Pretraining: supervised cross-entropy over all training classes (the transfer-learning stage).

This is the first stage of Meta-Transfer Learning (Sun et al. 2019) and the transfer baseline of
Eshratifar et al. (2019): a backbone + linear head trained on every base class at once, with cosine
learning-rate decay, on-device augmentation, bf16 autocast on CUDA, and validation few-shot
accuracy (prototypes on the validation classes) after every epoch; the best epoch is kept.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mtl.pipeline.config import config_to_dict, option_defaults
from mtl.pipeline.data import ClassImages, EpisodeSampler, Splits, load_data, make_splits
from mtl.pipeline.data.splits import METHODS as SPLIT_METHODS
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import BACKBONES, FewShotModel, ModelSpec, build_model
from mtl.pipeline.train.augment import random_affine
from mtl.pipeline.train.calibrate import Calibration, calibrate_checkpoint
from mtl.pipeline.train.checkpoint import (
    Checkpoint,
    flatten_optimizer,
    load_checkpoint,
    load_weights,
    restore_optimizer,
    save_checkpoint,
)
from mtl.pipeline.train.common import StepCallback, autocast, cosine_lr, no_progress, normalize, resolve_device
from mtl.pipeline.train.eval_backends import TorchBackend
from mtl.pipeline.train.evaluate import EvalConfig, evaluate
from mtl.pipeline.train.learners import transfer_learner
from mtl.pipeline.train.run_dir import RunDir


@dataclass(frozen=True)
class PretrainConfig:
    """Options of `mtl pretrain` (saved into the run directory and every checkpoint)."""

    data: str = "synthetic"
    out: str = "runs/pretrain"
    backbone: str = "conv4"
    backbone_options: dict[str, Any] = field(default_factory=dict)  # the builder's options, e.g. {"width": 128}
    head: str = "linear"
    image_size: int | None = None
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    augment_rotate: float = 10.0  # degrees
    augment_scale: float = 0.1
    augment_shift: float = 0.1  # of the image size
    augment_shear: float = 0.0
    augment_elastic: float = 0.0  # elastic distortion: control points move ± this of the size (0: none)
    rotations: bool = False
    flips: bool = False  # mirrored copies as new classes too (with rotations: all 8 symmetries of the square)
    teacher: str | None = None  # a pretrain run or checkpoint on the same classes: distil from it (born-again networks)
    distill_weight: float = 0.5  # the loss: (1 − w)·cross-entropy + w·T²·KL(teacher ‖ student) at temperature T
    distill_temperature: float = 4.0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, val, test; test 0: nothing held out (deploy)
    split_by: str = "auto"  # auto | superclass | class | superclass-test (pipeline.data.splits)
    split_seed: int = 0
    train_classes: int | None = None  # train on a seeded subset of this many training classes (data-scaling studies)
    seed: int = 0
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    val_episodes: int = 200
    calibrate_episodes: int = 200  # per cell, on the validation classes, at the end (0: leave uncalibrated)
    device: str = "auto"
    resume: bool = False
    download: bool = False

    def __post_init__(self) -> None:
        BACKBONES.check_options(self.backbone, self.backbone_options)  # names listed, before any data is read
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch size must be ≥ 1, got {self.epochs} and {self.batch_size}")
        if not (0 < self.lr < math.inf and 0 <= self.momentum < 1 and 0 <= self.weight_decay < math.inf):
            raise ConfigError(f"need lr > 0, 0 ≤ momentum < 1, weight decay ≥ 0; got {self.lr}, "
                              f"{self.momentum}, {self.weight_decay}")
        augment = (self.augment_rotate, self.augment_scale, self.augment_shift, self.augment_shear,
                   self.augment_elastic)
        if not all(0 <= a < math.inf for a in augment) or self.augment_scale >= 1 or self.augment_elastic >= 0.5:
            raise ConfigError(f"augmentation strengths must be ≥ 0 and finite (scale < 1, elastic < 0.5), got rotate, "
                              f"scale, shift, shear, elastic = {augment}")
        if len(self.split) != 3 or min(self.split[:2]) <= 0 or self.split[2] < 0:
            raise ConfigError(f"split needs three fractions (train, val, test), train and val positive, got "
                              f"{self.split}")
        if self.split_by not in SPLIT_METHODS:
            raise ConfigError(f"unknown --split-by {self.split_by!r}; choose from {', '.join(SPLIT_METHODS)}")
        EvalConfig(self.val_ways, self.val_shots, self.val_queries, self.val_episodes)
        if self.train_classes is not None and (isinstance(self.train_classes, bool) or self.train_classes < 1):
            raise ConfigError(f"--train-classes must be a whole number ≥ 1 (unset: every training class), got "
                              f"{self.train_classes!r}")
        if self.calibrate_episodes < 0:
            raise ConfigError(f"calibration episodes must be ≥ 0 (0: none), got {self.calibrate_episodes}")
        if not (0 <= self.distill_weight <= 1 and 0 < self.distill_temperature < math.inf):
            raise ConfigError(f"need 0 ≤ distill weight ≤ 1 and a temperature > 0, got {self.distill_weight} and "
                              f"{self.distill_temperature}")


@dataclass(frozen=True)
class PretrainResult:
    run_dir: str
    epochs: int
    best_val_accuracy: float
    last: dict
    calibration: Calibration | None = None  # the device settings chosen at the end (`pipeline.train.calibrate`)


def pretrain(cfg: PretrainConfig, on_step: StepCallback = no_progress) -> PretrainResult:
    """Run (or resume) a pretraining job; returns where it is and how well it did."""
    device = resolve_device(cfg.device)
    run = RunDir(cfg.out, config_to_dict(cfg), resume=cfg.resume, defaults=option_defaults(PretrainConfig))
    data = load_data(cfg.data, image_size=cfg.image_size, download=cfg.download)
    splits = _fewer_train_classes(make_splits(data, fractions=cfg.split, seed=cfg.split_seed, by=cfg.split_by), cfg)
    train, val = _split_data(data, splits, cfg)
    spec = ModelSpec(backbone=cfg.backbone, in_channels=data.spec.channels, image_size=data.spec.size,
                     head=cfg.head, n_classes=train.num_classes, options=cfg.backbone_options)
    teacher = None if cfg.teacher is None else _load_teacher(cfg.teacher, spec, splits, cfg).to(device)
    run.create()  # the data and the teacher are fine: only now does the run directory appear
    run.write_splits(splits.to_dict())
    torch.manual_seed(cfg.seed)
    model = build_model(spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                weight_decay=cfg.weight_decay)
    meta = {"kind": "pretrain", "config": config_to_dict(cfg), "model": spec.to_dict(),
            "input": data.spec.to_dict(), "splits": splits.to_dict(), "data": data.provenance}
    start, best = _maybe_resume(run, cfg, model, optimizer)
    train = train.to(device)
    val_cfg = EvalConfig(cfg.val_ways, cfg.val_shots, cfg.val_queries, cfg.val_episodes, seed=cfg.seed)
    record: dict = {}
    validator = TorchBackend(transfer_learner(spec, model.backbone), device, "prototype")  # prototypes: 0 steps
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        loss, acc, lr = _train_epoch(model, optimizer, train, cfg, epoch, device, on_step, teacher)
        val_result = evaluate(validator, val, val_cfg, 0)[-1]
        record = {"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "lr": lr,
                  "val_acc": val_result.mean, "val_ci95": val_result.ci95,
                  "seconds": round(time.perf_counter() - began, 3)}
        improved = val_result.mean > best
        best = max(best, val_result.mean)
        run.log(record)  # before the checkpoint: a resume truncates records past its epoch
        _save(run, model, optimizer, {**meta, "epoch": epoch + 1, "best_val": best, "metrics": record}, improved)
        on_step("epoch", epoch + 1, cfg.epochs, record)
    calibration = None
    if cfg.calibrate_episodes:
        _, calibration = calibrate_checkpoint(run.path, cfg.calibrate_episodes, cfg.seed, cfg.device)
    return PretrainResult(str(run.path), cfg.epochs, best, record, calibration)


def _fewer_train_classes(splits: Splits, cfg: PretrainConfig) -> Splits:
    """`cfg.train_classes` of the training classes, the first of one seeded shuffle (so a smaller subset is inside
    every larger one), in the split's order; validation and test unchanged. The run records the subset as its split."""
    if cfg.train_classes is None:
        return splits
    if cfg.train_classes > len(splits.train):
        raise ConfigError(f"--train-classes {cfg.train_classes}: the training split has only {len(splits.train)} "
                          "classes")
    order = list(splits.train)
    random.Random(cfg.split_seed).shuffle(order)
    kept = set(order[:cfg.train_classes])
    return dataclasses.replace(splits, train=tuple(name for name in splits.train if name in kept))


def _split_data(data: ClassImages, splits: Splits, cfg: PretrainConfig) -> tuple[ClassImages, ClassImages]:
    train = data.subset(splits.indices(data, "train"))
    val = data.subset(splits.indices(data, "val"))
    if val.num_classes < cfg.val_ways:
        raise ConfigError(f"the validation split has {val.num_classes} classes, fewer than "
                          f"--val-ways {cfg.val_ways}")
    EpisodeSampler(val, cfg.val_ways, cfg.val_shots, cfg.val_queries)  # fail now, not after an epoch
    train = train.with_rotations() if cfg.rotations else train
    return (train.with_flips() if cfg.flips else train), val


def _load_teacher(path: str, spec: ModelSpec, splits: Splits, cfg: PretrainConfig) -> FewShotModel:
    """The frozen teacher of a distillation run: a pretrain checkpoint over exactly the student's classes."""
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("kind") != "pretrain":
        raise ConfigError(f"--teacher {path}: not a pretrain checkpoint (kind {ckpt.meta.get('kind')!r})")
    taught = ckpt.meta.get("config", {})
    same = (ckpt.meta.get("splits") == splits.to_dict()
            and all(taught.get(k, False) == getattr(cfg, k) for k in ("rotations", "flips")))  # absent: off
    teacher_spec = ModelSpec.from_dict(ckpt.meta["model"])
    if not same or teacher_spec.n_classes != spec.n_classes:
        raise ConfigError(f"--teacher {path}: trained on other classes (another split, rotations or flips); a "
                          "teacher must have the student's split and class set")
    teacher = build_model(teacher_spec)
    load_weights(teacher, ckpt.model, ckpt.path)
    return teacher.eval().requires_grad_(False)


def _distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                  cfg: PretrainConfig) -> torch.Tensor:
    """Hinton et al.'s loss: (1 − w)·CE(labels) + w·T²·KL(softmax(teacher/T) ‖ softmax(student/T))."""
    t = cfg.distill_temperature
    soft = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher_logits / t, -1), log_target=True,
                    reduction="batchmean")
    return (1 - cfg.distill_weight) * F.cross_entropy(logits, labels) + cfg.distill_weight * t * t * soft


def _maybe_resume(run: RunDir, cfg: PretrainConfig, model: FewShotModel,
                  optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Restore model and optimizer from `last.safetensors` when resuming; returns (epoch, best)."""
    if not cfg.resume:
        return 0, float("-inf")
    ckpt = load_checkpoint(run.last)
    run.check_checkpoint(ckpt.meta)
    load_weights(model, ckpt.model, ckpt.path)
    restore_optimizer(optimizer, ckpt.optim, ckpt.meta["optimizer"])
    run.truncate_metrics(ckpt.meta["epoch"], "epoch")
    return int(ckpt.meta["epoch"]), float(ckpt.meta["best_val"])


def _train_epoch(model: FewShotModel, optimizer: torch.optim.Optimizer, train: ClassImages,
                 cfg: PretrainConfig, epoch: int, device: torch.device,
                 on_step: StepCallback, teacher: FewShotModel | None = None) -> tuple[float, float, float]:
    """One pass over the training images; returns (mean loss, accuracy, last lr). With a teacher, the loss is
    distilled from its logits on the same augmented batch."""
    model.train()
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed * 1_000_003 + epoch)  # per-epoch stream: resume is exact
    labels = train.labels()
    order = torch.randperm(len(train), generator=generator, device=device).split(cfg.batch_size)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    lr = cfg.lr
    for step, idx in enumerate(order):
        lr = cosine_lr(cfg.lr, epoch * len(order) + step, cfg.epochs * len(order))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = normalize(train.images[idx], train.spec)
        if cfg.augment:
            x = random_affine(x, generator, degrees=cfg.augment_rotate, scale=cfg.augment_scale,
                              translate=cfg.augment_shift, shear=cfg.augment_shear, hflip=train.spec.channels == 3,
                              elastic=cfg.augment_elastic)
        with autocast(device):
            logits = model(x)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
        if teacher is None:
            loss = F.cross_entropy(logits.float(), labels[idx])
        else:
            loss = _distill_loss(logits.float(), teacher_logits.float(), labels[idx], cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * idx.numel()  # no host sync inside the loop
        correct += (logits.argmax(-1) == labels[idx]).sum()
        on_step("batch", step + 1, len(order), {})
    return float(total_loss) / len(train), float(correct) / len(train), lr


def _save(run: RunDir, model: FewShotModel, optimizer: torch.optim.Optimizer, meta: dict,
          improved: bool) -> None:
    optim_tensors, optim_info = flatten_optimizer(optimizer)
    state = model.state_dict()
    if improved:
        save_checkpoint(run.best, Checkpoint(meta, state))
    save_checkpoint(run.last, Checkpoint({**meta, "optimizer": optim_info}, state, optim_tensors))
