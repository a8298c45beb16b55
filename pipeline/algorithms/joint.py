"""Joint meta-transfer learning (Eshratifar, Eigen & Pedram, AAAI 2019, "A Meta-Learning Approach
for Custom Model Training").

Every iteration makes two updates from the same θ on the same images: a meta-learner update
(MAML or Reptile, `--option meta-learner=reptile`) on the sampled tasks, giving θ_meta, and a transfer
update — ordinary cross-entropy over ALL base classes through a global classifier — giving θ_transfer.
The new parameters are θ = β·θ_meta + (1 − β)·θ_transfer (`--option beta=0.5`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from mtl.pipeline.algorithms import get_algorithm, register_algorithm
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.algorithm import Algorithm, LearnerInputs
from mtl.pipeline.meta.batch import Hyper, TaskBatch
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner

META_LEARNERS = ("maml", "reptile")


@dataclass(frozen=True)
class JointOptions:
    beta: float = 0.5  # θ = β·θ_meta + (1 − β)·θ_transfer
    meta_learner: str = "maml"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"--option beta must be in [0, 1], got {self.beta}")
        if self.meta_learner not in META_LEARNERS:
            raise ConfigError(f"--option meta-learner must be maml or reptile, got {self.meta_learner!r}")


def shared_parameters(learner: MetaLearner) -> dict[str, torch.nn.Parameter]:
    """Parameters both updates move (everything but the global transfer classifier)."""
    return {n: t for n, t in learner.named_parameters() if t.requires_grad and not n.startswith("transfer.")}


def transfer_update(learner: MetaLearner, batch: TaskBatch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One cross-entropy step over all base classes on every image of the meta-batch."""
    images = torch.cat([batch.support, batch.query], dim=1).flatten(0, 1)  # (B*(N*K+N*Q), C, H, W)
    local = torch.cat([batch.support_labels, batch.query_labels], dim=1)  # (B, N*K+N*Q)
    targets = batch.classes.gather(1, local).flatten()  # global base-class index of every image
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(learner.transfer(learner.body(images)).float(), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


@register_algorithm
class Joint(Algorithm):
    name = "joint"
    paper = "Eshratifar et al. 2019"
    inner = "all"
    Options = JointOptions
    recipes = {"maml": {"options": {"meta_learner": "maml"}},
               "reptile": {"options": {"meta_learner": "reptile"}, "head_init": "proto", "outer_lr": 0.5}}

    def spec(self, given: LearnerInputs) -> LearnerSpec:
        return replace(super().spec(given), transfer_classes=given.train_classes)

    def optimizers(self, learner: MetaLearner, lr: float, hp: Hyper) -> list[torch.optim.Optimizer]:
        if learner.spec.transfer_classes < 1:
            raise ConfigError("joint meta-transfer needs a global classifier over the base classes")
        shared = list(shared_parameters(learner).values())
        reptile = hp.options.meta_learner == "reptile"
        meta = torch.optim.SGD(shared, lr=lr) if reptile else torch.optim.Adam(shared, lr=lr)
        transfer = [t for t in learner.body.parameters() if t.requires_grad] + list(learner.transfer.parameters())
        return [meta, torch.optim.Adam(transfer, lr=lr)]

    def update(self, learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
               hp: Hyper) -> dict[str, torch.Tensor]:
        """θ ← β·θ_meta + (1 − β)·θ_transfer, both computed from the current θ."""
        meta_opt, transfer_opt = optimizers
        shared = shared_parameters(learner)
        start = {n: t.detach().clone() for n, t in shared.items()}
        metrics = dict(get_algorithm(hp.options.meta_learner).update(learner, batch, [meta_opt], hp))
        with torch.no_grad():
            after_meta = {n: t.detach().clone() for n, t in shared.items()}
            for name, tensor in shared.items():
                tensor.copy_(start[name])
        metrics["transfer_loss"] = transfer_update(learner, batch, transfer_opt)
        beta = hp.options.beta
        with torch.no_grad():
            for name, tensor in shared.items():
                tensor.copy_(beta * after_meta[name] + (1.0 - beta) * tensor)
        return metrics
