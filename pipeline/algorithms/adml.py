"""ADML (Yin et al. 2018, "Adversarial Meta-Learning").

MAML whose two loops see clean AND adversarial samples of every task. Adversarial samples are made with FGSM
(Goodfellow et al. 2015) against the meta-model θ before adaptation: x_adv = x + ε·sign(∇ₓ L(θ; x, y)), for
the support and the query set alike. Then, per task (§3 of the paper),

    φ_clean = θ − α ∇θ L(θ; support_clean),   φ_adv = θ − α ∇θ L(θ; support_adv)      (inner loop, k steps)
    θ ← θ − β ∇θ Σ_tasks [ L(φ_clean; query_adv) + L(φ_adv; query_clean) ]                (outer loop)

— each adapted model is judged on the other kind of queries, so the initialisation learns to adapt to clean
data in a way that holds under attack, and the reverse. ε is in the model's normalised input units (pixel/255
for Omniglot's mean 0, std 1), like `mtl evaluate --attack-epsilon`, which measures the same FGSM on the adapted
model's queries. A device adapts the head on clean support images (`--adapt head` at export, as MAML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import vmap

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.adversarial import fgsm
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.batch import Hyper, TaskBatch, query_metrics
from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import MetaLearner


@dataclass(frozen=True)
class ADMLOptions:
    epsilon: float = 0.1  # the FGSM step, in normalised input units

    def __post_init__(self) -> None:
        if not 0 < self.epsilon < math.inf:
            raise ValueError(f"epsilon must be positive and finite, got {self.epsilon}")


def adversarial_pair(learner: MetaLearner, p: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                     qy: torch.Tensor, n_way: int, steps: int, first_order: bool,
                     epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One task: (φ_clean's logits on adversarial queries, φ_adv's logits on clean queries), each (Q, N). The
    samples attack θ before adaptation: its head initialised on the clean support set, no step taken."""
    sx_adv = fgsm(lambda inp: learner.task_outputs(p, inp, sy, inp, n_way, 0, True), sx, sy, epsilon)
    qx_adv = fgsm(lambda inp: learner.task_outputs(p, sx, sy, inp, n_way, 0, True), qx, qy, epsilon)
    on_adversarial = learner.task_outputs(p, sx, sy, qx_adv, n_way, steps, first_order)
    on_clean = learner.task_outputs(p, sx_adv, sy, qx, n_way, steps, first_order)
    return on_adversarial, on_clean


@register_algorithm
class ADML(Algorithm):
    name = "adml"
    paper = "Yin et al. 2018"
    inner = "all"
    Options = ADMLOptions

    def update(self, learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
               hp: Hyper) -> dict[str, torch.Tensor]:
        """One outer step on the mean of both cross losses over the meta-batch."""
        optimizers[0].zero_grad(set_to_none=True)
        p = learner.state_params()

        def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return adversarial_pair(learner, p, sx, sy, qx, qy, batch.n_way, hp.inner_steps, hp.first_order,
                                    hp.options.epsilon)

        on_adversarial, on_clean = vmap(one, randomness="same")(batch.support, batch.support_labels, batch.query,
                                                                batch.query_labels)
        loss_adv, acc_adv = query_metrics(learner, on_adversarial, batch.query_labels)
        loss_clean, acc_clean = query_metrics(learner, on_clean, batch.query_labels)
        loss = (loss_adv + loss_clean).mean()
        loss.backward()
        optimizers[0].step()
        return {"loss": loss.detach(), "acc": (acc_clean.mean() + acc_adv.mean()) / 2,
                "adversarial_acc": acc_adv.mean()}
