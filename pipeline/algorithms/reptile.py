"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").

Each task adapts a copy of θ with plain SGD on the task's data; the meta-update moves θ towards
the adapted weights: θ ← θ + ε·mean_i(θ_i − θ). It is applied as an SGD step (lr = ε, `--outer-lr`) on the
pseudo-gradient θ − mean_i θ_i. The replicated head (one shared class vector) maps back by
averaging the adapted class rows.
"""

from __future__ import annotations

import torch
from torch.func import vmap

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.batch import Hyper, TaskBatch, chunk_slices
from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import MetaLearner


def collapse(fast: Params, learner: MetaLearner) -> Params:
    """Adapted task parameters named like the meta-parameters they move (head rows averaged)."""
    out = {n: t for n, t in fast.items() if n.startswith("body.")}
    if learner.spec.head_init == "learned" and "head.weight" in fast:
        out["head.init_weight"] = fast["head.weight"].mean(0)
        out["head.init_bias"] = fast["head.bias"].mean(0)
    return out


def adapted_mean(learner: MetaLearner, batch: TaskBatch, hp: Hyper) -> tuple[Params, torch.Tensor]:
    """mean_i θ_i over the tasks (support ∪ query is each task's training data) and the mean loss after."""
    p = {n: t.detach() for n, t in learner.state_params().items()}

    def one_task(x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        fast = learner.adapt(p, x, y, batch.n_way, hp.inner_steps, first_order=True)
        return collapse(fast, learner), learner.task_loss(learner.predict(p, fast, x), y)

    sums: Params = {}
    loss = torch.zeros((), device=batch.support.device)
    for index in chunk_slices(len(batch), hp.chunk):
        part = batch.part(index)
        x = torch.cat([part.support, part.query], dim=1)
        y = torch.cat([part.support_labels, part.query_labels], dim=1)
        adapted, losses = vmap(one_task, randomness="same")(x, y)
        for name, value in adapted.items():
            sums[name] = sums.get(name, 0) + value.sum(0)
        loss += losses.sum()
    return {n: v / len(batch) for n, v in sums.items()}, loss / len(batch)


@torch.no_grad()
def reptile_update(learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
                   hp: Hyper) -> dict[str, torch.Tensor]:
    """θ ← θ + ε·(mean_i θ_i − θ) through the optimiser (plain SGD with lr ε gives exactly that)."""
    target, loss = adapted_mean(learner, batch, hp)
    optimizers[0].zero_grad(set_to_none=True)
    for name, param in learner.named_parameters():
        if name in target:
            param.grad = param - target[name]
    optimizers[0].step()
    return {"loss": loss}


@register_algorithm
class Reptile(Algorithm):
    name = "reptile"
    paper = "Nichol et al. 2018"
    inner = "all"
    regression = True
    recipes = {"": {"outer_lr": 0.5, "head_init": "proto"}}  # ε = 0.5; proto init (the class-mean gradient is 0)

    def optimizers(self, learner: MetaLearner, lr: float, hp: Hyper) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD([t for t in learner.parameters() if t.requires_grad], lr=lr)]

    def update(self, learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
               hp: Hyper) -> dict[str, torch.Tensor]:
        return reptile_update(learner, batch, optimizers, hp)
