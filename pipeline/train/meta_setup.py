"""Everything a meta-training run is built from: data and splits, the learner, the task source and
the validation function — for image classification and for MAML's sine-wave regression."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mtl.pipeline.algorithms import algorithm_names, get_algorithm
from mtl.pipeline.config import config_to_dict
from mtl.pipeline.data import EpisodeSampler, InputSpec, Splits, load_data, make_splits
from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.meta.algorithm import LearnerInputs
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.models import ModelSpec
from mtl.pipeline.train.checkpoint import Checkpoint, load_checkpoint
from mtl.pipeline.train.eval_backends import TorchBackend, regression_scores
from mtl.pipeline.train.evaluate import EvalConfig, EvalResult, evaluate
from mtl.pipeline.train.tasks import ImageTasks, RegressionTasks

if TYPE_CHECKING:
    from mtl.pipeline.train.meta_train import MetaTrainConfig

@dataclass
class Setup:
    learner: MetaLearner
    tasks: ImageTasks | RegressionTasks
    meta: dict[str, Any]
    validate: Callable[[], tuple[float, float]]  # → (score, ci95); higher is better


def prepare(cfg: MetaTrainConfig, device: torch.device, part: slice | None = None) -> Setup:
    """`part`: the tasks of every meta-batch this process trains on (a distributed rank's share)."""
    if cfg.data == "sinusoid":
        return _prepare_regression(cfg, device, part)
    init = _load_init(cfg)
    model = ModelSpec.from_dict(init.meta["model"]) if init else None
    image_size = InputSpec.from_dict(init.meta["input"]).size if init else cfg.image_size
    data = load_data(cfg.data, image_size=image_size, download=cfg.download)
    splits = Splits.from_dict(init.meta["splits"]) if init else make_splits(data, fractions=cfg.split,
                                                                             seed=cfg.split_seed, by=cfg.split_by)
    train = data.subset(splits.indices(data, "train"))
    val = data.subset(splits.indices(data, "val"))
    train = train.with_rotations() if cfg.rotations else train
    alg = get_algorithm(cfg.algorithm)
    spec = alg.spec(LearnerInputs(backbone=cfg.backbone, in_channels=data.spec.channels, image_size=data.spec.size,
                                  options=dict(model.options) if model else dict(cfg.backbone_options), head=cfg.head,
                                  head_init=cfg.head_init, adapt=cfg.adapt, inner_lr=cfg.inner_lr,
                                  train_classes=train.num_classes))
    body = {k[len("backbone."):]: v for k, v in init.model.items() if k.startswith("backbone.")} if init else None
    torch.manual_seed(cfg.seed)
    learner = alg.build(spec, body).to(device)
    tasks = ImageTasks(train.to(device), cfg.ways, cfg.shots, cfg.queries, cfg.meta_batch, cfg.seed, part)
    # validation episodes have the training shape, with at most as many ways as there are validation classes
    # (Snell et al. train Omniglot 60-way; a validation split of a few alphabets has fewer characters)
    val_ways = min(cfg.ways, val.num_classes)
    EpisodeSampler(val, val_ways, cfg.shots, cfg.queries)  # a too-small validation split fails now, not later
    val_cfg = EvalConfig(val_ways, cfg.shots, cfg.queries, cfg.val_episodes, seed=cfg.seed)

    validator = TorchBackend(learner, device)

    steps = alg.adaptation_steps(cfg.inner_steps)  # what validation, evaluation and a device adapt with

    def validate() -> tuple[float, float]:
        result = evaluate(validator, val, val_cfg, steps)[-1]
        return result.mean, result.ci95

    meta = {"kind": "meta-train", "config": config_to_dict(cfg), "learner": spec.to_dict(),
            "input": data.spec.to_dict(), "splits": splits.to_dict(), "data": data.provenance,
            "algorithm": cfg.algorithm, "inner_steps": steps}
    return Setup(learner, tasks, meta, validate)


def _load_init(cfg: MetaTrainConfig) -> Checkpoint | None:
    if not cfg.init:
        return None
    init = load_checkpoint(cfg.init)
    if init.meta.get("kind") != "pretrain":
        raise CheckpointError(f"--init {cfg.init} is a {init.meta.get('kind')} checkpoint; it must come from "
                              "`mtl pretrain`")
    if init.meta["model"]["backbone"] != cfg.backbone:
        raise ConfigError(f"--init {cfg.init} holds a {init.meta['model']['backbone']} backbone but --backbone is "
                          f"{cfg.backbone}")
    return init


def _prepare_regression(cfg: MetaTrainConfig, device: torch.device, part: slice | None) -> Setup:
    """MAML §5.1: a 1→40→40→1 ReLU network adapted on K points of a sine wave, scored by MSE."""
    alg = get_algorithm(cfg.algorithm)
    if not alg.regression:
        able = [name for name in algorithm_names() if get_algorithm(name).regression]
        raise ConfigError(f"--data sinusoid supports {', '.join(able)}, not {cfg.algorithm}")
    spec = LearnerSpec(backbone="mlp", in_channels=1, image_size=1, head="none", head_init="zero", adapt="all",
                       learn_lr=alg.learn_lr, inner_lr=cfg.inner_lr)
    torch.manual_seed(cfg.seed)
    learner = alg.build(spec).to(device)
    tasks = RegressionTasks(cfg.shots, cfg.queries, cfg.meta_batch, cfg.seed, device, part)

    val_cfg = EvalConfig(ways=2, shots=cfg.shots, queries=cfg.queries, episodes=cfg.val_episodes)

    def validate() -> tuple[float, float]:
        result = EvalResult.of_episodes(regression_scores(learner, val_cfg, cfg.inner_steps, device, cfg.seed + 1),
                                        val_cfg, "adapt", metric="mse", ways=1)
        return -result.mean, result.ci95

    meta = {"kind": "meta-train", "config": config_to_dict(cfg), "learner": spec.to_dict(), "input": None,
            "splits": {"train": [], "val": [], "test": []}, "data": {"spec": "sinusoid"},
            "algorithm": cfg.algorithm, "inner_steps": cfg.inner_steps}
    return Setup(learner, tasks, meta, validate)
