"""Joint meta-transfer learning (Eshratifar, Eigen & Pedram, AAAI 2019, "A Meta-Learning Approach
for Custom Model Training").

Every iteration makes two updates from the same θ on the same images: a meta-learner update
(MAML or Reptile, `--meta-learner`) on the sampled tasks, giving θ_meta, and a transfer update —
ordinary cross-entropy over ALL base classes through a global classifier — giving θ_transfer.
The new parameters are θ = β·θ_meta + (1 − β)·θ_transfer (`--beta`, default 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl.pipeline.algorithms.base import Algorithm, Hyper, TaskBatch, gradient_update
from mtl.pipeline.algorithms.learner import MetaLearner
from mtl.pipeline.algorithms.reptile import reptile_update
from mtl.pipeline.errors import ConfigError


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


def joint_update(learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
                 hp: Hyper) -> dict[str, torch.Tensor]:
    """θ ← β·θ_meta + (1 − β)·θ_transfer, both computed from the current θ."""
    meta_opt, transfer_opt = optimizers
    shared = shared_parameters(learner)
    start = {n: t.detach().clone() for n, t in shared.items()}
    meta_step = reptile_update if hp.meta_learner == "reptile" else gradient_update
    metrics = dict(meta_step(learner, batch, [meta_opt], hp))
    with torch.no_grad():
        after_meta = {n: t.detach().clone() for n, t in shared.items()}
        for name, tensor in shared.items():
            tensor.copy_(start[name])
    metrics["transfer_loss"] = transfer_update(learner, batch, transfer_opt)
    with torch.no_grad():
        for name, tensor in shared.items():
            tensor.copy_(hp.beta * after_meta[name] + (1.0 - hp.beta) * tensor)
    return metrics


def joint_optimizers(learner: MetaLearner, lr: float, hp: Hyper) -> list[torch.optim.Optimizer]:
    if learner.spec.transfer_classes < 1:
        raise ConfigError("joint meta-transfer needs a global classifier over the base classes")
    shared = list(shared_parameters(learner).values())
    meta = torch.optim.SGD(shared, lr=lr) if hp.meta_learner == "reptile" else torch.optim.Adam(shared, lr=lr)
    transfer = [t for t in learner.body.parameters() if t.requires_grad] + list(learner.transfer.parameters())
    return [meta, torch.optim.Adam(transfer, lr=lr)]


ALGORITHM = Algorithm(name="joint", adapt="all", update=joint_update, make_optimizers=joint_optimizers,
                      paper="Eshratifar et al. 2019")
