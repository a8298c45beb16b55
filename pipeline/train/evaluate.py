"""Few-shot evaluation on held-out classes: mean accuracy ± 95% CI over a fixed set of episodes.

Episodes are drawn on the CPU from a seeded sampler, so the same seed gives the same episodes on
any machine and for any method. With a frozen extractor every image is embedded once (only the
images the episodes use), then each episode is scored on features:
- `prototype`: nearest class mean of support features (Snell et al. 2017), squared Euclidean.
- `finetune`: a fresh linear head trained on the support features of each episode (the transfer
  baseline, Chen et al. 2019; Tian et al. 2020), all episodes of a chunk optimised in one batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.sampler import EpisodeSampler, check_episode_shape
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.common import StepCallback, chunks, embed, mean_ci95, no_progress

# adapt: the inner loop of a meta-trained model; auto: what the checkpoint implies (see evaluate_ckpt)
METHODS = ("auto", "prototype", "finetune", "adapt")


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: the episode shape, how many episodes, and the adaptation method."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 600
    method: str = "auto"
    seed: int = 0
    finetune_steps: int = 100
    finetune_lr: float = 0.01

    def __post_init__(self) -> None:
        check_episode_shape(self.ways, self.shots, self.queries)
        if self.episodes < 1:
            raise ConfigError(f"episodes must be at least 1, got {self.episodes}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown evaluation method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.finetune_steps < 1 or not 0 < self.finetune_lr < math.inf:
            raise ConfigError("finetune steps must be ≥ 1 and finetune lr > 0")


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    method: str
    metric: str = "accuracy"  # "mse" for regression: then `accuracy` holds the mean squared error
    # the score of every episode, in episode order: what paired comparisons of two methods on the same
    # episodes need (the mean alone cannot tell a systematic difference from episode noise)
    per_episode: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of_episodes(cls, scores: torch.Tensor | Sequence[float], cfg: EvalConfig, method: str,
                    metric: str = "accuracy", ways: int | None = None) -> EvalResult:
        """Mean ± 95% CI of per-episode `scores` (E,), keeping the scores themselves."""
        scores = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
        mean, ci95 = mean_ci95(scores)
        return cls(mean, ci95, int(scores.numel()), cfg.ways if ways is None else ways, cfg.shots, cfg.queries,
                   method, metric, tuple(scores.tolist()))

    def to_dict(self) -> dict:
        """JSON-ready: `per_episode` as a list, and the mean under the metric's name."""
        data = asdict(self)
        data["per_episode"] = list(self.per_episode)
        data[self.metric] = data.pop("accuracy")
        return data


def draw_episodes(data: ClassImages, cfg: EvalConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Support rows (E, N*K) and query rows (E, N*Q), drawn on the CPU from `cfg.seed`."""
    sampler = EpisodeSampler(data.to("cpu") if data.images.device.type != "cpu" else data,
                             cfg.ways, cfg.shots, cfg.queries, meta_batch=cfg.episodes, seed=cfg.seed)
    _, support, query = sampler.sample_indices()
    return support, query


def prototype_logits(support: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """support (E, N*K, D) class-major, query (E, M, D) → logits (E, M, N) = −‖q − μ_c‖²."""
    e, nk, d = support.shape
    prototypes = support.view(e, ways, nk // ways, d).mean(dim=2)  # (E, N, D)
    return -torch.cdist(query, prototypes).pow(2)


def finetune_logits(support: torch.Tensor, query: torch.Tensor, ways: int, steps: int,
                    lr: float) -> torch.Tensor:
    """Train a linear head per episode on L2-normalised support features; logits (E, M, N)."""
    e, nk, d = support.shape
    labels = torch.arange(ways, device=support.device).repeat_interleave(nk // ways).expand(e, -1)
    support, query = 10.0 * F.normalize(support, dim=-1), 10.0 * F.normalize(query, dim=-1)
    weight = torch.zeros(e, ways, d, device=support.device, requires_grad=True)
    bias = torch.zeros(e, ways, device=support.device, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("emd,end->emn", support, weight) + bias[:, None]
            loss = F.cross_entropy(logits.reshape(-1, ways), labels.reshape(-1)) * e
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return torch.einsum("emd,end->emn", query, weight) + bias[:, None]


def score_episodes(features: torch.Tensor, support_index: torch.Tensor, query_index: torch.Tensor,
                   cfg: EvalConfig, on_step: StepCallback = no_progress, chunk: int = 100) -> EvalResult:
    """Per-episode accuracy from a row-indexed feature table `features` (T, D)."""
    accuracies = []
    query_labels = torch.arange(cfg.ways).repeat_interleave(cfg.queries).to(features.device)
    for part in chunks(support_index.shape[0], chunk):
        support = features[support_index[part].to(features.device)]
        query = features[query_index[part].to(features.device)]
        if cfg.method != "finetune":  # prototype (and "auto" for a frozen extractor)
            logits = prototype_logits(support, query, cfg.ways)
        else:
            logits = finetune_logits(support, query, cfg.ways, cfg.finetune_steps, cfg.finetune_lr)
        accuracies.append((logits.argmax(-1) == query_labels).float().mean(-1).cpu())
        on_step("episodes", part.stop, support_index.shape[0], {})
    return EvalResult.of_episodes(torch.cat(accuracies), cfg, cfg.method)


def evaluate_backbone(backbone: nn.Module, data: ClassImages, cfg: EvalConfig, device: torch.device,
                      on_step: StepCallback = no_progress) -> EvalResult:
    """Evaluate a frozen feature extractor on `data` (the held-out classes) with `cfg`'s episodes."""
    support_index, query_index = draw_episodes(data, cfg)
    used = torch.unique(torch.cat([support_index.flatten(), query_index.flatten()]))
    used_features = embed(backbone, data.images[used.to(data.images.device)], data.spec, device)
    features = used_features.new_zeros(len(data), used_features.shape[1])
    features[used.to(device)] = used_features
    return score_episodes(features, support_index, query_index, cfg, on_step)
