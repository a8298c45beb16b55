"""What a checkpoint ships to a device: a frozen extractor and a head that adapts on features.

The device adapts the head only, on features of a frozen body, so a checkpoint is exportable when
its body can be frozen: a pretrained extractor (transfer learning: prototype-initialised head),
a Meta-Transfer Learning model (scale/shift folded into the convolutions), and any model whose
inner loop adapted the head alone (ANIL, ProtoNet). A checkpoint whose inner loop adapted the body
too (MAML, Reptile, Meta-SGD, joint with `--adapt all`) needs `--adapt head` to be exported with its
body frozen, which the error says.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtl.device_runtime.schema import Context
from mtl.pipeline.data import InputSpec
from mtl.pipeline.meta.learner import MetaLearner
from mtl.pipeline.models.scale_shift import fold_scale_shift
from mtl.pipeline.models.task_batchnorm import TaskBatchNorm2d
from mtl.pipeline.train.checkpoint import Checkpoint
from mtl.pipeline.train.learners import load_learner


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
    context: Context | None = None  # a context vector the device adapts inside the extractor (CAML)

    @property
    def feature_dim(self) -> int:
        return int(self.learner.feature_dim)

    def init_arrays(self) -> dict[str, np.ndarray]:
        """init.npz content: the meta-learned step sizes (Meta-SGD), float32; a learned head initialisation is
        inside init_head.onnx."""
        if not self.learner.spec.learn_lr:
            return {}
        state = {n: t.detach().float().cpu().numpy() for n, t in self.learner.named_parameters()}
        return {"lr_weight": state["inner_lrs.head__weight"], "lr_bias": state["inner_lrs.head__bias"]}


def deploy_model(ckpt: Checkpoint, adapt: str | None = None) -> DeployModel:
    """The deployable part of a checkpoint (raises `CheckpointError` naming what cannot ship): its learner
    (`pipeline.train.learners`) as the algorithm says a device runs it (`Algorithm.deployable`)."""
    loaded = load_learner(ckpt)
    trained = loaded.learner
    learner = trained.eval() if loaded.algorithm is None else loaded.algorithm.deployable(trained, adapt, ckpt.path)
    body = fold_scale_shift(learner.body).eval() if learner.spec.scale_shift else learner.body.eval()
    batch_stats = any(isinstance(m, TaskBatchNorm2d) for m in body.modules())
    steps = loaded.steps if trained.head.adapts else 0
    spec, context = InputSpec.from_dict(ckpt.meta["input"]), None
    if learner.context_size:  # the trainer's inner steps adapt the context; its head is initialised after them
        with torch.no_grad():
            probe = learner.context_prefix(dict(learner.named_parameters()),
                                           torch.zeros(2, spec.channels, spec.size, spec.size))
        context = Context(learner.context_size, tuple(int(d) for d in probe.shape[1:]), loaded.steps,
                          float(learner.spec.inner_lr))
        steps, body = 0, learner.body_at_zero_context().eval()  # embed.onnx: the extractor at φ = 0
    return DeployModel(body, learner, spec, steps, float(learner.spec.inner_lr), loaded.name, batch_stats, context)
