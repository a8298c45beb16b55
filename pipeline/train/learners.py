"""A checkpoint as a few-shot learner: the one place where evaluation and export turn a checkpoint into the
`MetaLearner` they run, so `mtl evaluate CKPT` measures what the exported bundle does.

A meta-training checkpoint is its learner with its inner loop (as trained). A pretraining checkpoint is the
transfer learner a device gets from it: the frozen extractor (running BatchNorm statistics) with a cosine head
started at the support class means (cosine nearest-centroid at step 0; Chen et al. 2019/2021) and scaled by
`COSINE_INIT_SCALE`, so its support loss is not zero and SGD steps move it — unlike a prototype-initialised
linear head on raw features, whose logits are so far apart that its loss is 0 before the first step — adapted
by `TRANSFER_STEPS` SGD steps of `TRANSFER_LR`.

Either way, the device settings a calibration chose on the validation classes (`ckpt.meta["device"]`:
steps, step size, temperature; `pipeline.train.calibrate`) replace those defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from mtl.device_runtime.calibration import Temperature
from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.models import ModelSpec
from mtl.pipeline.train.checkpoint import Checkpoint, load_weights

TRANSFER_STEPS, TRANSFER_LR = 10, 0.3


@dataclass
class CheckpointLearner:
    learner: MetaLearner
    steps: int  # the inner steps it adapts with by default
    algorithm: Algorithm | None  # None: a pretrained extractor (transfer learning)
    name: str  # "pretrain" or the algorithm's name


def transfer_spec(model: ModelSpec) -> LearnerSpec:
    """The few-shot learner of a pretrained extractor (see the module)."""
    return LearnerSpec(model.backbone, model.in_channels, model.image_size, dict(model.options), head="cosine",
                       head_init="proto", adapt="head", freeze_body=True, inner_lr=TRANSFER_LR)


def transfer_learner(model: ModelSpec, body: torch.nn.Module) -> MetaLearner:
    """The transfer learner around an extractor module in use (a pretraining run validating its own backbone)."""
    return MetaLearner(transfer_spec(model), body=body)


def load_learner(ckpt: Checkpoint) -> CheckpointLearner:
    """The learner a checkpoint holds (weights loaded, on the CPU, in training mode)."""
    kind = ckpt.meta.get("kind")
    if kind == "pretrain":
        learner = MetaLearner(transfer_spec(ModelSpec.from_dict(ckpt.meta["model"])))
        body = {k[len("backbone."):]: v for k, v in ckpt.model.items() if k.startswith("backbone.")}
        load_weights(learner.body, body, ckpt.path)
        return _calibrated(CheckpointLearner(learner, TRANSFER_STEPS, None, "pretrain"), ckpt)
    if kind != "meta-train":
        raise CheckpointError(f"{ckpt.path} is neither a pretraining nor a meta-training checkpoint")
    algorithm = get_algorithm(str(ckpt.meta.get("algorithm")))
    learner = algorithm.build(LearnerSpec.from_dict(ckpt.meta["learner"]))
    load_weights(learner, ckpt.model, ckpt.path)
    return _calibrated(CheckpointLearner(learner, int(ckpt.meta["inner_steps"]), algorithm, algorithm.name), ckpt)


def _calibrated(loaded: CheckpointLearner, ckpt: Checkpoint) -> CheckpointLearner:
    """`loaded` with the device settings of `ckpt.meta["device"]` (see the module), when it has them."""
    settings = ckpt.meta.get("device")
    if settings is None:
        return loaded
    try:
        steps, lr = int(settings["steps"]), float(settings["lr"])
        temperature = Temperature.from_dict(settings["temperature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path} has unreadable device settings: {exc!r}") from None
    if steps < 0 or not (0 < lr < math.inf and math.isfinite(temperature.at(1, 1))):
        raise CheckpointError(f"{ckpt.path} has device settings out of range: steps {steps}, lr {lr}, "
                              f"temperature {temperature}")
    learner = loaded.learner
    if not learner.spec.learn_lr:  # learned (Meta-SGD) step sizes stay as learned
        learner.spec = dataclasses.replace(learner.spec, inner_lr=lr)
    learner.head.temperature = temperature
    return dataclasses.replace(loaded, steps=steps)
