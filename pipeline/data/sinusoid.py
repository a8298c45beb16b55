"""Sine-wave regression tasks: the toy task family of MAML.

Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (ICML 2017),
§5.1: each task is ``y = A · sin(x − φ)`` with amplitude ``A ~ U[0.1, 5.0]`` and phase ``φ ~ U[0, π]``;
its inputs are ``x ~ U[−5, 5]``. A meta-batch of B tasks is drawn with one ``torch.rand`` call on the
training device, so sampling has no Python loop per task or per point.
"""

from __future__ import annotations

import math

import torch

from mtl.pipeline.data.sampler import Episodes
from mtl.pipeline.errors import ConfigError

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


def _check_count(label: str, value: object) -> int:
    """``value`` if it is an int >= 1, else `ConfigError` naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be an int >= 1, got {value!r}")
    return value


def _uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Map ``u ~ U[0, 1)`` onto ``U[low, high)``."""
    low, high = bounds
    return low + (high - low) * u


class SinusoidTasks:
    """Seeded sampler of sine-wave regression tasks, drawn by tensor ops on `device` (no Python loop per task).

    Randomness comes from a private `torch.Generator` on ``device`` seeded by ``seed``, so two samplers
    with the same seed draw the same tasks, and `state_dict` / `load_state_dict` give an exact resume
    (as `EpisodeSampler`). Each call to `sample` draws fresh amplitudes, phases and inputs.
    """

    def __init__(self, k_shot: int, q_query: int, meta_batch: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.k_shot = _check_count("shots", k_shot)
        self.q_query = _check_count("queries", q_query)
        self.meta_batch = _check_count("meta-batch", meta_batch)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def sample(self, meta_batch: int | None = None) -> Episodes:
        """Draw B tasks (B = ``meta_batch`` or the sampler's default) as `Episodes` of float32 points.

        support / support_labels: (B, K, 1) inputs x and targets y;  query / query_labels: (B, Q, 1);
        classes: (B, 2) the task parameters [amplitude, phase];  support_index / query_index: (B, 0) int64
        (there are no stored items to index).
        """
        b = self.meta_batch if meta_batch is None else _check_count("meta-batch", meta_batch)
        k, q = self.k_shot, self.q_query
        u = torch.rand(b, 2 + k + q, generator=self.generator, device=self.device)  # (B, 2+K+Q)
        params = torch.stack([_uniform(u[:, 0], AMPLITUDE_RANGE), _uniform(u[:, 1], PHASE_RANGE)], dim=1)
        x = _uniform(u[:, 2:], INPUT_RANGE)[..., None]  # (B, K+Q, 1)
        y = self.curve(params, x)
        empty = torch.empty(b, 0, dtype=torch.int64, device=self.device)
        return Episodes(x[:, :k].contiguous(), y[:, :k].contiguous(), x[:, k:].contiguous(),
                        y[:, k:].contiguous(), params, empty, empty.clone())

    @staticmethod
    def curve(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The true functions: params (B, 2) = [amplitude, phase], x (B, M, 1) -> A·sin(x − φ) (B, M, 1)."""
        amplitude, phase = params[:, 0, None, None], params[:, 1, None, None]  # (B, 1, 1) each
        return amplitude * torch.sin(x - phase)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator state; `load_state_dict` of it continues the exact same task stream."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
