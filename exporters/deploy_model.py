"""What a checkpoint ships to a device: a frozen extractor and a head that adapts on features.

The device adapts the head only, on features of a frozen body, so a checkpoint is exportable when
its body can be frozen: a pretrained extractor (transfer learning: prototype-initialised head),
a Meta-Transfer Learning model (scale/shift folded into the convolutions), and any model whose
inner loop adapted the head alone (ANIL, ProtoNet). A checkpoint whose inner loop adapted the body
too (MAML, Reptile, Meta-SGD, joint with `--adapt all`) needs `--adapt head` to be exported with its
body frozen, which the error says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from torch import nn

from mtl.pipeline.algorithms import LearnerSpec, MetaLearner
from mtl.pipeline.data import InputSpec
from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.models import ModelSpec, build_model
from mtl.pipeline.models.scale_shift import fold_scale_shift
from mtl.pipeline.models.task_batchnorm import TaskBatchNorm2d
from mtl.pipeline.train.checkpoint import Checkpoint, load_weights

PRETRAIN_DEFAULT_STEPS, PRETRAIN_DEFAULT_LR = 10, 0.1


@dataclass
class DeployModel:
    """A frozen body for embed.onnx and a learner whose head maths the adapt/predict graphs trace."""

    body: nn.Module
    learner: MetaLearner
    input_spec: InputSpec
    steps: int
    lr: float
    algorithm: str
    batch_statistics: bool

    @property
    def feature_dim(self) -> int:
        return int(self.learner.feature_dim)

    def init_arrays(self) -> dict[str, np.ndarray]:
        """init.npz content: the learned head initialisation and learned step sizes, float32."""
        arrays: dict[str, np.ndarray] = {}
        state = {n: t.detach().float().cpu().numpy() for n, t in self.learner.named_parameters()}
        if self.learner.spec.head_init == "learned":
            arrays["head_weight"] = state["head_weight"]
            arrays["head_bias"] = state["head_bias"]
        if self.learner.spec.learn_lr:
            arrays["lr_weight"] = state["inner_lrs.head__weight"]
            arrays["lr_bias"] = state["inner_lrs.head__bias"]
        return arrays


def deploy_model(ckpt: Checkpoint, adapt: str | None = None) -> DeployModel:
    """The deployable part of a checkpoint (raises `CheckpointError` naming what cannot ship)."""
    kind = ckpt.meta.get("kind")
    spec = InputSpec.from_dict(ckpt.meta["input"]) if ckpt.meta.get("input") else None
    if kind == "pretrain":
        model = build_model(ModelSpec.from_dict(ckpt.meta["model"]))
        load_weights(model, ckpt.model, ckpt.path)
        m = ModelSpec.from_dict(ckpt.meta["model"])
        learner = MetaLearner(LearnerSpec(m.backbone, m.in_channels, m.image_size, dict(m.options), head="linear",
                                          head_init="proto", adapt="head",
                                          inner_lr=PRETRAIN_DEFAULT_LR))
        return DeployModel(model.backbone.eval(), learner, spec, PRETRAIN_DEFAULT_STEPS, PRETRAIN_DEFAULT_LR,
                           "pretrain", False)
    if kind != "meta-train":
        raise CheckpointError(f"{ckpt.path} is neither a pretraining nor a meta-training checkpoint")
    learner = MetaLearner(LearnerSpec.from_dict(ckpt.meta["learner"]))
    load_weights(learner, ckpt.model, ckpt.path)
    learner.eval()
    if learner.spec.head == "none" or spec is None:
        raise CheckpointError(f"{ckpt.path} is a regression model; only image classifiers export to a bundle")
    _check_adaptable(ckpt, learner, adapt)
    if learner.spec.adapt != "head":  # ProtoNet, or the body frozen on request: a proto-initialised head
        learner = _head_only(learner)
    body = fold_scale_shift(learner.body).eval() if learner.spec.scale_shift else learner.body
    batch_stats = any(isinstance(m, TaskBatchNorm2d) for m in body.modules())
    steps = 0 if ckpt.meta.get("algorithm") == "protonet" else int(ckpt.meta["inner_steps"])
    return DeployModel(body, learner, spec, steps, float(learner.spec.inner_lr), str(ckpt.meta.get("algorithm")),
                       batch_stats)


def _check_adaptable(ckpt: Checkpoint, learner: MetaLearner, adapt: str | None) -> None:
    if adapt not in (None, "head"):
        raise ConfigError(f"--adapt must be head, got {adapt!r}: a device adapts the head on features")
    if learner.spec.adapt == "all" and adapt != "head":
        convs = [n for n, _ in learner.named_parameters() if n.startswith("body.") and n.endswith("weight")]
        raise CheckpointError(
            f"{ckpt.path}: its inner loop adapted the body ({len(convs)} weight tensors, e.g. {convs[0]}), which "
            "the device graph cannot update yet (no ONNX translation of convolution gradients); export with "
            "--adapt head to ship the body frozen and adapt the head only")


def _head_only(learner: MetaLearner) -> MetaLearner:
    """The same body and head maths with a head-only inner loop (proto init for ProtoNet)."""
    head_init = "proto" if learner.spec.adapt == "proto" else learner.spec.head_init
    spec = dataclasses.replace(learner.spec, adapt="head", head_init=head_init)
    head_only = MetaLearner(spec)
    head_only.load_state_dict(learner.state_dict(), strict=False)  # drops the body's step sizes only
    return head_only.eval()
