"""What every gradient-based algorithm shares: the task batch, vmapped task outputs, the meta-gradient.

Tasks of a meta-batch are processed together: `torch.func.vmap` maps `MetaLearner.task_outputs`
(support → inner loop → query predictions) over the task axis, so the GPU sees one batched
computation instead of a Python loop over tasks. A meta-batch that does not fit is processed in
chunks whose gradients accumulate to exactly the unchunked result.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import vmap

from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import MetaLearner


@dataclass(frozen=True)
class TaskBatch:
    """B tasks, inputs already float. support (B, N*K, ...) labels (B, N*K); query (B, N*Q, ...).

    `classes` (B, N) holds each task's global class indices (used by joint meta-transfer).
    For regression, labels are float targets (B, M, 1) and `n_way` is 1.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor
    n_way: int

    def __len__(self) -> int:
        return int(self.support.shape[0])

    def part(self, index: slice) -> TaskBatch:
        return TaskBatch(self.support[index], self.support_labels[index], self.query[index],
                         self.query_labels[index], self.classes[index], self.n_way)


@dataclass(frozen=True)
class Hyper:
    """What the meta-batch engine needs to run a step, and the algorithm's own options (`Algorithm.Options`)."""

    inner_steps: int = 5
    first_order: bool = False
    chunk: int = 0  # tasks per vmapped call; 0 = the whole meta-batch
    bf16: bool = False  # bf16 autocast of the task forward/backward passes (CUDA)
    compile: bool = False  # torch.compile the meta-batch forward (its backward is compiled with it)
    compile_mode: str = "default"  # torch.compile mode; "reduce-overhead" adds CUDA graphs (static shapes)
    options: Any = None  # the algorithm's options dataclass (e.g. joint's beta), None when it has none


# one task's outputs: (learner, p, support, labels, query, n_way, steps, first_order) → (Q, N); an algorithm's
# `task_outputs`, by default the learner's own
TaskFn = Callable[..., torch.Tensor]


def _learner_task(learner: MetaLearner, p: Params, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                  n_way: int, steps: int, first_order: bool) -> torch.Tensor:
    return learner.task_outputs(p, support, labels, query, n_way, steps, first_order)


def batch_outputs(learner: MetaLearner, p: Params, batch: TaskBatch, steps: int, first_order: bool = False,
                  task: TaskFn | None = None) -> torch.Tensor:
    """Query predictions of every task: (B, Q, N) logits (or (B, Q, 1) regression values)."""
    task = task or _learner_task

    def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        return task(learner, p, sx, sy, qx, batch.n_way, steps, first_order)

    return vmap(one_task, randomness="same")(batch.support, batch.support_labels, batch.query)


def query_metrics(learner: MetaLearner, outputs: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task query loss (B,) and accuracy (B,) (negative MSE stands in for accuracy in regression)."""
    if learner.head.regression:
        loss = ((outputs - labels) ** 2).mean(dim=(1, 2))
        return loss, -loss.detach()
    b, q, n = outputs.shape
    if outputs.dtype in (torch.float16, torch.bfloat16):  # autocast outputs: the loss in float32
        outputs = outputs.float()
    loss = F.cross_entropy(outputs.reshape(b * q, n), labels.reshape(-1), reduction="none").view(b, q).mean(1)
    return loss, (outputs.argmax(-1) == labels).float().mean(1)


def chunk_slices(total: int, chunk: int) -> list[slice]:
    size = chunk if 0 < chunk < total else total
    return [slice(i, min(total, i + size)) for i in range(0, total, size)]


def task_losses(learner: MetaLearner, p: Params, part: TaskBatch, steps: int, first_order: bool,
                bf16: bool, task: TaskFn | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-task query loss (B,), accuracy (B,) and outputs (B, Q, N) of a (part of a) meta-batch."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        outputs = batch_outputs(learner, p, part, steps, first_order, task)
    loss, acc = query_metrics(learner, outputs, part.query_labels)
    return loss, acc, outputs


def _compiled_losses(learner: MetaLearner, support: torch.Tensor, support_labels: torch.Tensor,
                     query: torch.Tensor, query_labels: torch.Tensor, n_way: int, steps: int, first_order: bool,
                     bf16: bool, task: TaskFn | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`task_losses` with plain tensor arguments, the form torch.compile traces (and guards on) best."""
    part = TaskBatch(support, support_labels, query, query_labels, query_labels[:, :1], n_way)
    return task_losses(learner, learner.state_params(), part, steps, first_order, bf16, task)


@functools.cache
def compiled_losses(mode: str = "default") -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The compiled meta-batch forward, built once per process and mode (dynamo re-specialises per shape)."""
    return torch.compile(_compiled_losses, dynamic=False, mode=mode)


def _losses(learner: MetaLearner, p: Params, part: TaskBatch, hp: Hyper, first_order: bool,
            task: TaskFn | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`task_losses`, compiled under `hp.compile`. If compiling fails (a backend or an op it cannot handle),
    this process warns once and stays eager: the same computation, only slower."""
    if hp.compile and not _COMPILE_FAILED:
        try:
            return compiled_losses(hp.compile_mode)(learner, part.support, part.support_labels, part.query,
                                                    part.query_labels, part.n_way, hp.inner_steps, first_order,
                                                    hp.bf16, task)
        except torch._dynamo.exc.TorchDynamoException as exc:
            _COMPILE_FAILED.append(exc)
            warnings.warn(f"torch.compile of the meta-step failed ({type(exc).__name__}); continuing without it",
                          RuntimeWarning, stacklevel=3)
    return task_losses(learner, p, part, hp.inner_steps, first_order, hp.bf16, task)


_COMPILE_FAILED: list[Exception] = []


def accumulate_meta_gradient(learner: MetaLearner, batch: TaskBatch, hp: Hyper, first_order: bool | None = None,
                             task: TaskFn | None = None) -> dict[str, torch.Tensor]:
    """Backpropagate the mean query loss over all tasks into `.grad` (chunked, same result).

    No value leaves the device here (no `.item()`): metrics stay tensors so the GPU never waits.
    """
    first_order = hp.first_order if first_order is None else first_order
    p = learner.state_params()
    total_loss = torch.zeros((), device=batch.support.device)
    total_acc = torch.zeros((), device=batch.support.device)
    worst = []
    for index in chunk_slices(len(batch), hp.chunk):
        part = batch.part(index)
        loss, acc, outputs = _losses(learner, p, part, hp, first_order, task)
        (loss.sum() / len(batch)).backward()
        total_loss += loss.detach().sum()
        total_acc += acc.sum()
        if not learner.head.regression:
            worst.append(worst_classes(outputs.detach(), part))
    metrics = {"loss": total_loss / len(batch), "acc": total_acc / len(batch)}
    if worst:
        metrics["worst_classes"] = torch.cat(worst)
    return metrics


def worst_classes(outputs: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Global index of each task's class with the lowest query accuracy (B,): the "failure classes"
    of Sun et al.'s hard-task meta-batch."""
    correct = (outputs.argmax(-1) == batch.query_labels).float()  # (B, Q)
    per_class = torch.zeros(correct.shape[0], batch.n_way, device=correct.device)
    per_class.scatter_add_(1, batch.query_labels, correct)
    return batch.classes.gather(1, per_class.argmin(1, keepdim=True)).squeeze(1)


def fitting_meta_gradient(learner: MetaLearner, batch: TaskBatch, hp: Hyper,
                          task: TaskFn | None = None) -> dict[str, torch.Tensor]:
    """`accumulate_meta_gradient`, halving the chunk on out-of-memory until it fits (same result).

    The chunk that fitted is returned as metrics["chunk"] so the loop keeps using it.
    """
    chunk = hp.chunk if 0 < hp.chunk < len(batch) else len(batch)
    while True:
        learner.zero_grad(set_to_none=True)
        try:
            metrics = accumulate_meta_gradient(learner, batch, dataclasses.replace(hp, chunk=chunk), task=task)
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        metrics["chunk"] = torch.tensor(chunk)
        return metrics
