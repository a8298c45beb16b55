"""`mtl evaluate` on a checkpoint: pretrained extractors and meta-learned models alike."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from mtl.pipeline.algorithms import LearnerSpec, MetaLearner
from mtl.pipeline.data import ClassImages, InputSpec, load_data
from mtl.pipeline.errors import CheckpointError, ConfigError, DataError
from mtl.pipeline.models import ModelSpec, build_model
from mtl.pipeline.models.task_batchnorm import TaskBatchNorm2d
from mtl.pipeline.train.checkpoint import Checkpoint, load_checkpoint, load_weights
from mtl.pipeline.train.common import StepCallback, no_progress, resolve_device
from mtl.pipeline.train.evaluate import EvalConfig, EvalResult, evaluate_backbone
from mtl.pipeline.train.evaluate_bundle import bundle_step_curve, evaluate_bundle, is_bundle
from mtl.pipeline.train.evaluate_meta import evaluate_learner, evaluate_regression, learner_step_curve

NOTHING_TO_PLOT = ("{path} is a pretrained extractor, evaluated by class prototypes, which take no adaptation "
                   "steps: there is no accuracy-vs-steps curve to plot; export it (mtl export) and plot the "
                   "bundle, whose head starts at the prototypes and takes SGD steps")


@dataclass(frozen=True)
class CheckpointEvaluation:
    result: EvalResult
    data: str
    classes: str
    checkpoint: str


def evaluate_checkpoint(path: str, data_spec: str | None, cfg: EvalConfig, device_name: str = "auto",
                        on_step: StepCallback = no_progress, steps: int | None = None) -> CheckpointEvaluation:
    """Evaluate a checkpoint on the test classes of its split (or on a dataset it never saw).

    `steps` overrides a meta-trained model's inner steps (default: as trained)."""
    if is_bundle(path):
        result, data_spec, which = evaluate_bundle(path, data_spec, cfg, steps, on_step)
        return CheckpointEvaluation(result, data_spec, which, str(path))
    device = resolve_device(device_name)
    ckpt = load_checkpoint(path)
    data_spec = data_spec or ckpt.meta["config"]["data"]
    if cfg.method == "auto":
        cfg = dataclasses.replace(cfg, method=default_method(ckpt))
    if ckpt.meta.get("kind") == "meta-train":
        learner = MetaLearner(LearnerSpec.from_dict(ckpt.meta["learner"]))
        load_weights(learner, ckpt.model, ckpt.path)
        learner.to(device)
        steps = int(ckpt.meta["inner_steps"]) if steps is None else steps
        if learner.spec.head == "none":
            result = evaluate_regression(learner, cfg, steps, device, seed=10_000 + cfg.seed)
            return CheckpointEvaluation(result, "sinusoid", "fresh sine-wave tasks", str(ckpt.path))
        body = learner.body
        if cfg.method != "adapt" and has_batch_statistics(body):
            learner, cfg = _per_episode(learner, cfg)
    else:
        if cfg.method == "adapt":
            raise ConfigError("--method adapt needs a meta-trained checkpoint; use prototype or finetune")
        model = build_model(ModelSpec.from_dict(ckpt.meta["model"]))
        load_weights(model, ckpt.model, ckpt.path)
        body = model.backbone.to(device)
    data, which = held_out_classes(data_spec, ckpt.meta)
    if cfg.method == "adapt":
        result = evaluate_learner(learner, data, cfg, steps, device, on_step)
    else:
        result = evaluate_backbone(body, data, cfg, device, on_step)
    return CheckpointEvaluation(result, data_spec, which, str(ckpt.path))


@dataclass(frozen=True)
class StepCurve:
    results: list[EvalResult]  # results[k]: after k adaptation steps
    data: str
    classes: str
    checkpoint: str


def step_curve(path: str, data_spec: str | None, cfg: EvalConfig, device_name: str = "auto",
               on_step: StepCallback = no_progress, steps: int | None = None) -> StepCurve:
    """Accuracy after 0, 1, …, `steps` (default: as trained, or the bundle's) adaptation steps, on the same
    seeded episodes as `evaluate_checkpoint`: a meta-trained model's inner loop, or a bundle's device steps."""
    if cfg.method not in ("auto", "adapt"):
        raise ConfigError(f"--plot draws accuracy against adaptation steps, which --method {cfg.method} does not "
                          "take; use --method adapt (or auto)")
    if is_bundle(path):
        results, data_spec, which = bundle_step_curve(path, data_spec, cfg, steps, on_step)
        return StepCurve(results, data_spec, which, str(path))
    device = resolve_device(device_name)
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("kind") != "meta-train":
        raise ConfigError(NOTHING_TO_PLOT.format(path=path))
    learner = MetaLearner(LearnerSpec.from_dict(ckpt.meta["learner"]))
    load_weights(learner, ckpt.model, ckpt.path)
    if learner.spec.head == "none":
        raise ConfigError(f"{path} is a sine-wave regression model; --plot draws classification accuracy")
    data_spec = data_spec or ckpt.meta["config"]["data"]
    data, which = held_out_classes(data_spec, ckpt.meta)
    steps = int(ckpt.meta["inner_steps"]) if steps is None else steps
    results = learner_step_curve(learner.to(device), data, cfg, steps, device, on_step)
    return StepCurve(results, data_spec, which, str(ckpt.path))


def default_method(ckpt: Checkpoint) -> str:
    """The method a checkpoint implies: its inner loop if meta-trained (ProtoNet's is the nearest
    prototype of each episode), prototypes for a pretrained extractor."""
    return "adapt" if ckpt.meta.get("kind") == "meta-train" else "prototype"


def has_batch_statistics(body: nn.Module) -> bool:
    """True when the body normalises with the statistics of each batch (MAML-style transductive BatchNorm)."""
    return any(isinstance(m, TaskBatchNorm2d) for m in body.modules())


def _per_episode(learner: MetaLearner, cfg: EvalConfig) -> tuple[MetaLearner, EvalConfig]:
    """--method prototype for a body with batch statistics: prototypes computed episode by episode (support
    and queries each normalised as one batch, as in training), not over features embedded in arbitrary batches."""
    if cfg.method != "prototype":
        raise ConfigError(f"--method {cfg.method} embeds images outside their episodes, which changes the features "
                          "of a model normalised with per-task batch statistics; use --method adapt or prototype")
    proto = MetaLearner(dataclasses.replace(learner.spec, adapt="proto", learn_lr=False))
    proto.load_state_dict(learner.state_dict(), strict=False)  # drops learned step sizes only
    return proto.to(next(learner.parameters()).device), dataclasses.replace(cfg, method="adapt")


def held_out_classes(data_spec: str, meta: dict) -> tuple[ClassImages, str]:
    """The checkpoint's test classes from `data_spec`, or all classes of a dataset it never saw."""
    trained = InputSpec.from_dict(meta["input"])
    data = load_data(data_spec, image_size=trained.size)
    if (data.spec.channels, data.spec.size) != (trained.channels, trained.size):
        raise CheckpointError(f"{data_spec} gives {data.spec.channels}×{data.spec.size}² images but the "
                              f"checkpoint was trained on {trained.channels}×{trained.size}²")
    data = dataclasses.replace(data, spec=trained)
    index = {name: i for i, name in enumerate(data.class_names)}
    test = meta["splits"]["test"]
    if all(name in index for name in test):
        return data.subset([index[n] for n in test]), f"test split ({len(test)} classes)"
    seen = set(meta["splits"]["train"]) | set(meta["splits"]["val"])
    if seen.isdisjoint(index):
        return data, f"all {data.num_classes} classes (none seen in training)"
    missing = next(n for n in test if n not in index)
    raise DataError(f"{data_spec} shares classes with the checkpoint's training data but lacks its test "
                    f"class {missing!r}")
