"""THE inner loop: the one function that adapts parameters to a task.

Meta-training, evaluation and the ONNX exporter all call `inner_step` / `inner_adapt`, so what a
device runs is, by construction, what the trainer optimised ("one source of truth",
docs/architecture.md). Written with `torch.func` so it works per task under `vmap`, and stays differentiable
for second-order MAML unless `first_order` drops the second-order term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
from torch.func import grad_and_value

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]
StepSize = float | torch.Tensor | Mapping[str, torch.Tensor]


def _step_size(lr: StepSize, name: str) -> float | torch.Tensor:
    return lr[name] if isinstance(lr, Mapping) else lr


def inner_step(params: Params, inputs: torch.Tensor, labels: torch.Tensor, lr: StepSize, *, loss_fn: LossFn,
               first_order: bool = False) -> tuple[Params, torch.Tensor]:
    """One SGD step θ' = θ − α·∇θ L(θ; inputs, labels); returns (θ', L(θ)).

    `lr` is a scalar, or a per-parameter mapping of tensors broadcastable to each parameter (Meta-SGD,
    Li et al. 2017). With `first_order` the gradient is detached (FOMAML; Finn et al. 2017 §5.2).
    """
    grads, loss = grad_and_value(loss_fn)(params, inputs, labels)
    if first_order:
        grads = {name: g.detach() for name, g in grads.items()}
    return {name: p - _step_size(lr, name) * grads[name] for name, p in params.items()}, loss


def inner_adapt(params: Params, inputs: torch.Tensor, labels: torch.Tensor, steps: int, lr: StepSize, *,
                loss_fn: LossFn, first_order: bool = False) -> Params:
    """`steps` inner SGD steps from `params` on one task's support set (inputs, labels)."""
    for _ in range(steps):
        params, _ = inner_step(params, inputs, labels, lr, loss_fn=loss_fn, first_order=first_order)
    return params


def inner_trajectory(params: Params, inputs: torch.Tensor, labels: torch.Tensor, steps: int, lr: StepSize, *,
                     loss_fn: LossFn, first_order: bool = False) -> Iterator[Params]:
    """The parameters after 0, 1, …, `steps` inner steps (the same `inner_step`s as `inner_adapt`), lazily:
    `mtl evaluate --plot` scores every step count in one pass. A separate loop, so that the training path
    stays a plain loop that vmap and torch.compile see without a generator."""
    yield params
    for _ in range(steps):
        params, _ = inner_step(params, inputs, labels, lr, loss_fn=loss_fn, first_order=first_order)
        yield params
