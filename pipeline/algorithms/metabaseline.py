"""Meta-Baseline (Chen, Liu, Xu, Darrell & Wang, ICCV 2021, "Meta-Baseline: Exploring Simple Meta-Learning for
Few-Shot Learning").

Starts from a classifier trained on all base classes (`--init` from `mtl pretrain`, the "Classifier-Baseline")
and fine-tunes its extractor episodically: each task's queries are classified by cosine similarity to the
support class means, scaled by a learned temperature (the cosine head with `proto` init, no inner steps), and
the query loss trains the extractor and the temperature. BatchNorm keeps the pretrained running statistics, so
the device embeds image by image. On a device the head starts at the class means and may take SGD steps.
"""

from __future__ import annotations

import dataclasses

import torch

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.meta.algorithm import Algorithm, LearnerInputs
from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner


@register_algorithm
class MetaBaseline(Algorithm):
    name = "metabaseline"
    paper = "Chen et al. 2021"
    inner = "head"
    needs_init = True
    recipes = {"": {"outer_lr": 1e-3}}

    def spec(self, given: LearnerInputs) -> LearnerSpec:
        return dataclasses.replace(super().spec(given), head="cosine", head_init="proto", adapt="head",
                                   running_stats=True)

    def task_outputs(self, learner: MetaLearner, p: Params, support: torch.Tensor, labels: torch.Tensor,
                     query: torch.Tensor, n_way: int, steps: int, first_order: bool) -> torch.Tensor:
        """Cosine nearest-centroid, no inner steps: τ·cos(f(q), μ_c)."""
        head = learner.init_head(p, learner.features(p, support), labels, n_way)
        return learner.head_logits(p, head, learner.features(p, query))
