"""Siamese networks (Koch, Zemel & Salakhutdinov 2015, "Siamese Neural Networks for One-shot Image Recognition").

A twin encoder f (the backbone, one set of weights for both images) and a verification head p(same | x₁, x₂) =
σ(Σ_j α_j |f(x₁)_j − f(x₂)_j| + β) — the weighted L1 distance of the paper — trained by binary cross-entropy on
same/different pairs. The pairs are those of each training episode: every query against every support image,
the positives weighted up to balance the (N − 1) negatives per positive (Koch et al. draw balanced pairs), with
the paper's affine distortions (rotation ±10°, shear ±0.3, scale 0.8–1.2, translation; drawn for the whole batch)
applied to both images. The distortions are seeded by the episode's classes, so a resumed run draws the same ones
without extra state.

One-shot classification is the support image of highest similarity: the `siamese` task head stores the support
embeddings (the class mean when K > 1, an extension of the paper's one-shot rule) and scores a query against
them; the exported bundle's predict.onnx does the same on the device.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vmap

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm, LearnerInputs
from mtl.pipeline.meta.batch import Hyper, TaskBatch
from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.train.augment import random_affine


@dataclass(frozen=True)
class SiameseOptions:
    distort: bool = True  # Koch et al.'s affine distortions of the training pairs
    rotate: float = 10.0  # degrees
    shear: float = 0.3
    scale: float = 0.2
    translate: float = 0.05  # of the image size (2 px of Koch et al.'s 105 px is 0.02)

    def __post_init__(self) -> None:
        for name in ("rotate", "shear", "scale", "translate"):
            value = getattr(self, name)
            if not 0 <= value < (180 if name == "rotate" else 1):
                raise ValueError(f"{name} must be in [0, {180 if name == 'rotate' else 1}), got {value}")


def distort(batch: TaskBatch, options: SiameseOptions) -> TaskBatch:
    """The batch with every support and query image distorted, seeded by the episode's classes."""
    if not options.distort:
        return batch
    generator = torch.Generator(device=batch.support.device)
    generator.manual_seed(zlib.crc32(batch.classes.cpu().numpy().tobytes()))

    def jitter(x: torch.Tensor) -> torch.Tensor:
        flat = random_affine(x.flatten(0, 1), generator, degrees=options.rotate, scale=options.scale,
                             translate=options.translate, shear=options.shear)
        return flat.view_as(x)

    return dataclasses.replace(batch, support=jitter(batch.support), query=jitter(batch.query))


def pair_logits(learner: MetaLearner, p: Params, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                query_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One task: the verification logit of every (query, support image) pair (Q, M), and whether each pair is of
    the same class (Q, M)."""
    similarity = learner.head.similarity(learner.head_params(p), learner.features(p, query),
                                         learner.features(p, support))
    return similarity, query_labels[:, None] == labels[None, :]


def pair_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Balanced binary cross-entropy: positives and negatives weigh the same in total."""
    target = same.to(logits.dtype)
    positives = target.sum((-1, -2), keepdim=True).clamp(min=1)
    negatives = (1 - target).sum((-1, -2), keepdim=True).clamp(min=1)
    weight = target / positives + (1 - target) / negatives
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum((-1, -2)).mean() / 2


def verification_auc(logits: torch.Tensor, same: torch.Tensor) -> float:
    """Area under the ROC curve of same/different pair scores: P(a same pair outscores a different one), ties
    counting half (the Mann–Whitney statistic)."""
    pos, neg = logits[same].double(), logits[~same].double()
    if not len(pos) or not len(neg):
        raise ValueError("verification AUC needs same and different pairs")
    _, inverse, counts = torch.cat([pos, neg]).unique(return_inverse=True, return_counts=True)
    ranks = (counts.cumsum(0) - (counts - 1) / 2)[inverse]  # 1-based, tied values share their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@register_algorithm
class Siamese(Algorithm):
    name = "siamese"
    paper = "Koch et al. 2015"
    inner = "head"
    head = "siamese"
    Options = SiameseOptions

    def spec(self, given: LearnerInputs) -> LearnerSpec:
        return dataclasses.replace(super().spec(given), head="siamese", head_init="proto", adapt="head")

    def adaptation_steps(self, inner_steps: int) -> int:
        return 0  # the paper's rule: no steps (a calibration may still choose some for the device)

    def task_outputs(self, learner: MetaLearner, p: Params, support: torch.Tensor, labels: torch.Tensor,
                     query: torch.Tensor, n_way: int, steps: int, first_order: bool) -> torch.Tensor:
        """Classification as the paper does it: no steps, the class whose stored embedding is most similar."""
        return learner.task_outputs(p, support, labels, query, n_way, 0, first_order)

    def update(self, learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
               hp: Hyper) -> dict[str, torch.Tensor]:
        """One step of balanced pair cross-entropy over the meta-batch's (distorted) episodes."""
        optimizers[0].zero_grad(set_to_none=True)
        p = learner.state_params()
        pairs = distort(batch, hp.options or SiameseOptions())

        def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return pair_logits(learner, p, sx, sy, qx, qy)

        logits, same = vmap(one, randomness="same")(pairs.support, pairs.support_labels, pairs.query,
                                                    pairs.query_labels)
        loss = pair_loss(logits, same)
        loss.backward()
        optimizers[0].step()
        with torch.no_grad():  # one-shot accuracy of the same pairs: the most similar support image's class
            nearest = pairs.support_labels.gather(1, logits.detach().argmax(-1))
            acc = (nearest == pairs.query_labels).to(logits.dtype).mean()
        return {"loss": loss.detach(), "acc": acc}
