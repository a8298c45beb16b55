"""A checkpoint as a few-shot learner: the one place where evaluation and export turn a checkpoint into the
`MetaLearner` they run, so `mtl evaluate CKPT` measures what the exported bundle does.

A meta-training checkpoint is its learner with its inner loop (as trained). A pretraining checkpoint is the
transfer learner a device gets from it: the frozen extractor (running BatchNorm statistics) with a
prototype-initialised linear head — which classifies exactly as the nearest class mean does at step 0 — adapted
by `TRANSFER_STEPS` SGD steps of `TRANSFER_LR`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.models import ModelSpec
from mtl.pipeline.train.checkpoint import Checkpoint, load_weights

TRANSFER_STEPS, TRANSFER_LR = 10, 0.1


@dataclass
class CheckpointLearner:
    learner: MetaLearner
    steps: int  # the inner steps it adapts with by default
    algorithm: Algorithm | None  # None: a pretrained extractor (transfer learning)
    name: str  # "pretrain" or the algorithm's name


def transfer_spec(model: ModelSpec) -> LearnerSpec:
    """The few-shot learner of a pretrained extractor (see the module)."""
    return LearnerSpec(model.backbone, model.in_channels, model.image_size, dict(model.options), head="linear",
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
        return CheckpointLearner(learner, TRANSFER_STEPS, None, "pretrain")
    if kind != "meta-train":
        raise CheckpointError(f"{ckpt.path} is neither a pretraining nor a meta-training checkpoint")
    algorithm = get_algorithm(str(ckpt.meta.get("algorithm")))
    learner = algorithm.build(LearnerSpec.from_dict(ckpt.meta["learner"]))
    load_weights(learner, ckpt.model, ckpt.path)
    return CheckpointLearner(learner, int(ckpt.meta["inner_steps"]), algorithm, algorithm.name)
