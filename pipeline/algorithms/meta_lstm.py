"""The LSTM meta-learner (Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning").

The learner's parameters θ are the cell state of a coordinate-wise LSTM, shared across all coordinates, that
learns the update rule AND the initialisation (θ₀, the head's learned class vector):

    θ_t = f_t ⊙ θ_{t−1} − i_t ⊙ ∇_t,
    f_t = σ(w_f·[h_t, θ_{t−1}, f_{t−1}] + b_f),   i_t = σ(w_i·[h_t, θ_{t−1}, i_{t−1}] + b_i),

where h_t is the output of a first, ordinary LSTM (hidden size 20, as the paper) fed each coordinate's
gradient and the loss, both with the preprocessing of Andrychowicz et al. 2016 (§3.2 of the paper: x →
(log|x|/p, sign x) if |x| ≥ e^−p else (−1, e^p·x), p = 10). With f = 1 and i = α it is SGD with step α, so
the forget bias starts high (f ≈ 1) and the input bias at σ⁻¹(`--inner-lr`) (the paper starts i small). As in
the paper, the gradient and loss inputs are not differentiated through (no second-order terms); the meta-gradient
flows through the LSTM's own parameters, the trajectory and θ₀.

The inner loop updates the head on support features (`--adapt head` by default; the paper updates every
parameter, which `--adapt all` does in training — a device adapts the head only). On a device the learned rule
IS the bundle's `adapt_step.onnx`: it takes and returns each coordinate's LSTM state (`adapt.rule` "lstm"), so the
device runs the learned optimiser, not SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.inner import LossFn, Params
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner

HIDDEN = 20  # the first LSTM's hidden size (Ravi & Larochelle 2017)
FORGET_BIAS = 5.0  # f starts at σ(5) ≈ 0.993 (the paper draws it from U(4, 6))
P = 10.0  # the preprocessing's p


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """Andrychowicz et al.'s gradient preprocessing, (...) → (..., 2): log-magnitude and sign for |x| ≥ e^−p,
    else (−1, e^p·x). Written without a log of 0 so that it exports and differentiates everywhere."""
    small = x.abs() < math.exp(-P)
    magnitude = torch.log(x.abs().clamp(min=math.exp(-P))) / P  # exactly −1 on the small side
    return torch.stack([magnitude, torch.where(small, x * math.exp(P), torch.sign(x))], dim=-1)


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, cell: nn.LSTMCell) -> tuple[torch.Tensor, ...]:
    """`nn.LSTMCell`'s maths on its own parameters, in plain tensor ops: its fused kernel has no vmap rule."""
    gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class LSTMUpdateRule(nn.Module):
    """One step of the meta-learner on any tensor of coordinates, with each coordinate's state (h, c, f, i)."""

    def __init__(self, inner_lr: float) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, HIDDEN)
        self.forget = nn.Linear(HIDDEN + 2, 1)
        self.input = nn.Linear(HIDDEN + 2, 1)
        with torch.no_grad():
            for gate, bias in ((self.forget, FORGET_BIAS), (self.input, math.log(inner_lr / (1 - inner_lr)))):
                gate.weight.uniform_(-0.01, 0.01)
                gate.bias.fill_(bias)

    state_size = 2 * HIDDEN + 2

    def forward(self, theta: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor,
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """θ (...), its gradient (...), the loss (), the state (..., S) → (θ', state')."""
        shape = theta.shape
        theta, grad = theta.reshape(-1, 1), grad.reshape(-1, 1)
        state = state.reshape(-1, self.state_size)
        h, c = state[:, :HIDDEN], state[:, HIDDEN:2 * HIDDEN]
        f_prev, i_prev = state[:, 2 * HIDDEN:2 * HIDDEN + 1], state[:, 2 * HIDDEN + 1:]
        x = torch.cat([preprocess(grad[:, 0]), preprocess(loss).expand(grad.shape[0], 2)], dim=1)
        h, c = lstm_cell(x, h, c, self.cell)
        f = torch.sigmoid(self.forget(torch.cat([h, theta, f_prev], dim=1)))
        i = torch.sigmoid(self.input(torch.cat([h, theta, i_prev], dim=1)))
        new = f * theta - i * grad
        return new.reshape(shape), torch.cat([h, c, f, i], dim=1).reshape(*shape, self.state_size)


class MetaLSTMLearner(MetaLearner):
    """A `MetaLearner` whose inner loop is the learned `LSTMUpdateRule` instead of SGD."""

    def __init__(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> None:
        if not 0 < spec.inner_lr < 1:
            raise ConfigError(f"--algorithm meta-lstm starts its input gate at --inner-lr, a sigmoid's value: it "
                              f"must be in (0, 1), got {spec.inner_lr}")
        super().__init__(spec, body_state)
        self.update_rule = LSTMUpdateRule(spec.inner_lr)

    state_size = LSTMUpdateRule.state_size

    def rule_step(self, p: Params, fast: Params, grads: Params, loss: torch.Tensor,
                  state: Params) -> tuple[Params, Params]:
        """One learned update of every tensor of `fast` (with its gradient and state) → (fast', state')."""
        rule = {n[len("update_rule."):]: t for n, t in p.items() if n.startswith("update_rule.")}
        new, new_state = {}, {}
        for name, theta in fast.items():
            new[name], new_state[name] = functional_call(self.update_rule, rule,
                                                         (theta, grads[name], loss, state[name]))
        return new, new_state

    def learned_step(self, p: Params, fast: Params, state: Params, inputs: torch.Tensor, labels: torch.Tensor,
                     loss_fn: LossFn) -> tuple[Params, Params, torch.Tensor]:
        """One step of the learned rule on a task → (fast', state', the loss at `fast`): what meta-training,
        evaluation and the device's adapt_step.onnx (traced from this very function) all run."""
        grads, loss = grad_and_value(loss_fn)(fast, inputs, labels)  # not differentiated through (the paper)
        new, new_state = self.rule_step(p, fast, {n: g.detach() for n, g in grads.items()}, loss.detach(), state)
        return new, new_state, loss

    def initial_state(self, fast: Params) -> Params:
        """Every coordinate's (h, c, f, i) before the first step: zeros."""
        return {n: t.new_zeros(*t.shape, self.state_size) for n, t in fast.items()}

    def update_rule_adapt(self, p: Params, fast: Params, inputs: torch.Tensor, labels: torch.Tensor, steps: int,
                          loss_fn: LossFn, first_order: bool) -> Params:
        state = self.initial_state(fast)
        for _ in range(steps):
            fast, state, _ = self.learned_step(p, fast, state, inputs, labels, loss_fn)
        return fast

    def update_rule_trajectory(self, p: Params, fast: Params, inputs: torch.Tensor, labels: torch.Tensor,
                               steps: int, loss_fn: LossFn, first_order: bool) -> Iterator[Params]:
        state = self.initial_state(fast)
        yield fast
        for _ in range(steps):
            fast, state, _ = self.learned_step(p, fast, state, inputs, labels, loss_fn)
            yield fast


@register_algorithm
class MetaLSTM(Algorithm):
    name = "meta-lstm"
    paper = "Ravi & Larochelle 2017"
    inner = "head"
    recipes = {"": {"inner_lr": 0.3}}

    def build(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> MetaLearner:
        return MetaLSTMLearner(spec, body_state)
