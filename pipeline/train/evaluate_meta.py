"""Evaluation of meta-learned models: every episode adapted through the same inner loop as training.

Episodes come from `draw_episodes` (CPU, seeded), exactly as for pretrained extractors, so numbers
of different methods on the same seed are measured on the same episodes.
"""

from __future__ import annotations

import torch

from pipeline.algorithms.base import TaskBatch, batch_outputs, query_metrics
from pipeline.algorithms.learner import MetaLearner
from pipeline.data.class_images import ClassImages
from pipeline.train.common import StepCallback, chunks, mean_ci95, no_progress, normalize
from pipeline.train.evaluate import EvalConfig, EvalResult, draw_episodes


def evaluate_learner(learner: MetaLearner, data: ClassImages, cfg: EvalConfig, steps: int, device: torch.device,
                     on_step: StepCallback = no_progress, chunk: int = 50) -> EvalResult:
    """Adapt on each episode's support set (`steps` inner steps), score its queries."""
    support_index, query_index = draw_episodes(data, cfg)
    support_labels = torch.arange(cfg.ways, device=device).repeat_interleave(cfg.shots)
    query_labels = torch.arange(cfg.ways, device=device).repeat_interleave(cfg.queries)
    p = {n: t.detach() for n, t in learner.state_params().items()}
    was_training = learner.training
    learner.train()  # the episodic algorithms use per-task batch statistics, as in training
    accuracies = []
    try:
        for part in chunks(support_index.shape[0], chunk):
            e = support_index[part].shape[0]
            batch = TaskBatch(normalize(data.images[support_index[part]].to(device), data.spec),
                              support_labels.expand(e, -1), normalize(data.images[query_index[part]].to(device),
                                                                      data.spec),
                              query_labels.expand(e, -1), torch.zeros(e, cfg.ways, dtype=torch.long, device=device),
                              cfg.ways)
            with torch.no_grad():
                _, acc = query_metrics(learner, batch_outputs(learner, p, batch, steps, first_order=True),
                                       batch.query_labels)
            accuracies.append(acc.cpu())
            on_step("episodes", part.stop, support_index.shape[0], {})
    finally:
        learner.train(was_training)
    mean, ci95 = mean_ci95(torch.cat(accuracies))
    method = "prototype" if learner.spec.adapt == "proto" else "adapt"
    return EvalResult(mean, ci95, cfg.episodes, cfg.ways, cfg.shots, cfg.queries, method)


def evaluate_regression(learner: MetaLearner, cfg: EvalConfig, steps: int, device: torch.device,
                        seed: int) -> EvalResult:
    """Mean squared error after `steps` inner steps on `cfg.episodes` fresh sine-wave tasks drawn from `seed`."""
    from pipeline.train.tasks import RegressionTasks

    batch = RegressionTasks(cfg.shots, cfg.queries, cfg.episodes, seed, device).sample()
    p = {n: t.detach() for n, t in learner.state_params().items()}
    with torch.no_grad():
        loss, _ = query_metrics(learner, batch_outputs(learner, p, batch, steps, True), batch.query_labels)
    mean, ci95 = mean_ci95(loss.cpu())
    return EvalResult(mean, ci95, cfg.episodes, 1, cfg.shots, cfg.queries, "adapt", metric="mse")
