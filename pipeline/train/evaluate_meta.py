"""Evaluation of meta-learned models: every episode adapted through the same inner loop as training.

Episodes come from `draw_episodes` (CPU, seeded), exactly as for pretrained extractors, so numbers
of different methods on the same seed are measured on the same episodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.func import vmap

from mtl.pipeline.algorithms.base import TaskBatch, batch_outputs, query_metrics
from mtl.pipeline.algorithms.learner import MetaLearner
from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.common import StepCallback, chunks, no_progress, normalize
from mtl.pipeline.train.evaluate import EvalConfig, EvalResult, draw_episodes


def evaluate_learner(learner: MetaLearner, data: ClassImages, cfg: EvalConfig, steps: int, device: torch.device,
                     on_step: StepCallback = no_progress, chunk: int = 50) -> EvalResult:
    """Adapt on each episode's support set (`steps` inner steps), score its queries."""
    accuracies = []
    p = {n: t.detach() for n, t in learner.state_params().items()}
    with _episode_mode(learner):
        for batch in _episode_batches(data, cfg, device, on_step, chunk):
            with torch.no_grad():
                _, acc = query_metrics(learner, batch_outputs(learner, p, batch, steps, first_order=True),
                                       batch.query_labels)
            accuracies.append(acc.cpu())
    method = "prototype" if learner.spec.adapt == "proto" else "adapt"
    return EvalResult.of_episodes(torch.cat(accuracies), cfg, method)


def learner_step_curve(learner: MetaLearner, data: ClassImages, cfg: EvalConfig, steps: int, device: torch.device,
                       on_step: StepCallback = no_progress, chunk: int = 50) -> list[EvalResult]:
    """Accuracy after 0, 1, …, `steps` inner steps on the episodes of `evaluate_learner`, in one pass: each
    chunk of episodes is adapted once and its queries scored after every step (`task_outputs_per_step`)."""
    if learner.spec.adapt == "proto":
        raise ConfigError("a prototype model (ProtoNet) has no adaptation steps: there is no curve to plot")
    p = {n: t.detach() for n, t in learner.state_params().items()}
    accuracies = []  # per chunk: (S+1, E)
    with _episode_mode(learner):
        for batch in _episode_batches(data, cfg, device, on_step, chunk):

            def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
                return learner.task_outputs_per_step(p, sx, sy, qx, cfg.ways, steps)

            with torch.no_grad():
                outputs = vmap(one_task, randomness="same")(batch.support, batch.support_labels, batch.query)
            correct = outputs.argmax(-1) == batch.query_labels[:, None]  # (E, S+1, Q)
            accuracies.append(correct.float().mean(-1).T.cpu())
    per_step = torch.cat(accuracies, dim=1)
    return [EvalResult.of_episodes(row, cfg, "adapt") for row in per_step]


@contextlib.contextmanager
def _episode_mode(learner: MetaLearner) -> Iterator[None]:
    """Training mode while evaluating: the episodic algorithms use per-task batch statistics, as in training."""
    was_training = learner.training
    learner.train()
    try:
        yield
    finally:
        learner.train(was_training)


def _episode_batches(data: ClassImages, cfg: EvalConfig, device: torch.device, on_step: StepCallback,
                     chunk: int) -> Iterator[TaskBatch]:
    """`cfg`'s seeded episodes (`draw_episodes`) as task batches of up to `chunk` episodes on `device`."""
    support_index, query_index = draw_episodes(data, cfg)
    support_labels = torch.arange(cfg.ways, device=device).repeat_interleave(cfg.shots)
    query_labels = torch.arange(cfg.ways, device=device).repeat_interleave(cfg.queries)
    for part in chunks(support_index.shape[0], chunk):
        e = support_index[part].shape[0]
        yield TaskBatch(normalize(data.images[support_index[part]].to(device), data.spec), support_labels.expand(e, -1),
                        normalize(data.images[query_index[part]].to(device), data.spec), query_labels.expand(e, -1),
                        torch.zeros(e, cfg.ways, dtype=torch.long, device=device), cfg.ways)
        on_step("episodes", part.stop, support_index.shape[0], {})


def evaluate_regression(learner: MetaLearner, cfg: EvalConfig, steps: int, device: torch.device,
                        seed: int) -> EvalResult:
    """Mean squared error after `steps` inner steps on `cfg.episodes` fresh sine-wave tasks drawn from `seed`."""
    from mtl.pipeline.train.tasks import RegressionTasks

    batch = RegressionTasks(cfg.shots, cfg.queries, cfg.episodes, seed, device).sample()
    p = {n: t.detach() for n, t in learner.state_params().items()}
    with torch.no_grad():
        loss, _ = query_metrics(learner, batch_outputs(learner, p, batch, steps, True), batch.query_labels)
    return EvalResult.of_episodes(loss, cfg, "adapt", metric="mse", ways=1)
