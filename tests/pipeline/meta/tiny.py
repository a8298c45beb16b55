"""Tiny learners and task batches, small enough for finite differences and fast enough for every test."""

import torch

from mtl.pipeline.meta.batch import TaskBatch
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner


def tiny_learner(dtype=torch.float64, seed=0, **overrides) -> MetaLearner:
    """A two-block, four-filter Conv-4 on 8×8 images: small enough for finite differences."""
    spec = dict(backbone="conv4", in_channels=1, image_size=8, options={"width": 4, "depth": 2}, adapt="all",
                inner_lr=0.3)
    spec.update(overrides)
    torch.manual_seed(seed)
    learner = MetaLearner(LearnerSpec(**spec)).to(dtype)
    with torch.no_grad():  # a non-trivial head initialisation, so head gradients are not all symmetric
        if hasattr(learner.head, "init_weight"):
            learner.head.init_weight.normal_(0, 0.3)
    return learner


def tiny_batch(tasks=3, ways=3, shots=2, queries=2, dtype=torch.float64, seed=1, classes=10) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, 8, 8, generator=g, dtype=dtype)
    chosen = torch.stack([torch.randperm(classes, generator=g)[:ways] for _ in range(tasks)])  # (B, N)

    def draw(per_class):
        labels = torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1)
        x = centres[chosen.gather(1, labels)] + 0.5 * torch.randn(tasks, ways * per_class, 1, 8, 8, generator=g,
                                                                     dtype=dtype)
        return x, labels.contiguous()

    sx, sy = draw(shots)
    qx, qy = draw(queries)
    return TaskBatch(sx, sy, qx, qy, chosen, ways)
