"""Small pieces every loop shares: device choice, input normalisation, autocast, batched embedding."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mtl.pipeline.data.images import InputSpec
from mtl.pipeline.errors import ConfigError

# on_step(kind, done, total, info): the CLI draws progress from these calls; pipeline never prints.
StepCallback = Callable[[str, int, int, dict[str, Any]], None]


def no_progress(kind: str, done: int, total: int, info: dict[str, Any]) -> None:
    """The default `on_step`: ignore progress."""


def resolve_device(name: str) -> torch.device:
    """"auto" → CUDA when available else CPU; "cuda" without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def normalize(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 (..., C, H, W) → float32 `(x / 255 - mean) / std` per channel."""
    mean, std = _channel_stats(tuple(spec.mean), tuple(spec.std), images.device)
    return (images.float() / 255.0 - mean) / std


@functools.cache
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 1, 1) mean and std on `device`, made once: a host→GPU copy per batch would stall the GPU."""
    return (torch.tensor(mean, device=device).view(-1, 1, 1), torch.tensor(std, device=device).view(-1, 1, 1))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed for bf16); a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, spec: InputSpec, device: torch.device,
          batch_size: int = 256) -> torch.Tensor:
    """Features (T, D) float32 of uint8 images (T, C, H, W), in eval mode, batch by batch."""
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        for part in chunks(images.shape[0], batch_size):
            x = normalize(images[part].to(device, non_blocking=True), spec)
            with autocast(device):
                out.append(backbone(x).float())
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0, device=device)


def cosine_lr(base_lr: float, step: int, total_steps: int, warmup: int = 0) -> float:
    """Cosine-annealed learning rate with optional linear warm-up, as a pure function of the step."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% confidence half-width 1.96·σ/√E of per-episode accuracies (sample σ)."""
    values = values.double()
    if values.numel() < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(unbiased=True) / math.sqrt(values.numel()))
