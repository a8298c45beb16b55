"""`MetaLearner`: a backbone plus a class-count-agnostic head, used functionally by every algorithm.

The head is not a fixed (N, D) matrix: at the start of each task it is *initialised* for however
many classes the task has, so one learned model adapts to any N (training N need not be device N):
- `learned`: one shared class vector w (D,) and bias b, replicated per class (zero-symmetry init;
  Ye & Chao, "How to train your MAML to excel in few-shot classification", ICLR 2022);
- `proto`: W_c = 2·μ_c, b_c = −‖μ_c‖² from the support features (Proto-MAML; Triantafillou et al. 2020);
- `zero`: W = 0, b = 0.
`adapt="head"` adapts only (W, b) in the inner loop on features (ANIL, MTL); `adapt="all"` adapts the
body too (MAML); `adapt="proto"` has no inner loop (Prototypical Networks, Snell et al. 2017).
With `scale_shift` the body is frozen in eval mode and modulated per channel (Sun et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtl.pipeline.algorithms.inner import LossFn, Params, StepSize, inner_adapt, inner_trajectory
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import build_backbone
from mtl.pipeline.models.task_batchnorm import use_task_batchnorm

HEAD_INITS = ("learned", "proto", "zero")
ADAPT_MODES = ("head", "all", "proto")


@dataclass(frozen=True)
class LearnerSpec:
    """Everything needed to rebuild a `MetaLearner` (stored in every meta-training checkpoint)."""

    backbone: str
    in_channels: int
    image_size: int
    options: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"  # linear | cosine | none (regression: the body's output is the prediction)
    head_init: str = "learned"
    adapt: str = "all"
    scale_shift: bool = False
    learn_lr: bool = False
    inner_lr: float = 0.4
    transfer_classes: int = 0  # > 0: a global classifier over the base classes (joint meta-transfer)

    def __post_init__(self) -> None:
        if self.head not in ("linear", "cosine", "none"):
            raise ConfigError(f"unknown head {self.head!r}; choose linear or cosine")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"unknown head init {self.head_init!r}; choose from {', '.join(HEAD_INITS)}")
        if self.head == "cosine" and self.head_init == "zero":
            raise ConfigError("a cosine head cannot start from zero class vectors (their direction is undefined); "
                              "use --head-init learned or proto")
        if self.adapt not in ADAPT_MODES:
            raise ConfigError(f"unknown --adapt {self.adapt!r}; choose head or all")
        if not self.inner_lr > 0:
            raise ConfigError(f"inner lr must be positive, got {self.inner_lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerSpec:
        return cls(**data)


def _drops_running_stats(body: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """True when `state` has BatchNorm statistics that a body without running stats cannot hold."""
    own = set(body.state_dict())
    extra = set(state) - own
    return bool(extra) and all(k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
                               for k in extra)


def _mangle(name: str) -> str:
    return name.replace(".", "__")


class MetaLearner(nn.Module):
    """Backbone ("body"), head-initialisation parameters and optional learned inner step sizes."""

    def __init__(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> None:
        """`body_state`: pretrained backbone weights, loaded before any scale/shift wrapping."""
        super().__init__()
        self.spec = spec
        options = dict(spec.options)
        if not spec.scale_shift:  # per-task batch statistics: nothing stateful under vmap
            options.setdefault("track_running_stats", False)
        self.body = build_backbone(spec.backbone, in_channels=spec.in_channels, image_size=spec.image_size,
                                   **options)
        if body_state is not None:
            from mtl.pipeline.train.checkpoint import load_weights  # late: train imports algorithms

            load_weights(self.body, body_state, "the pretrained (--init) checkpoint",
                         strict=not _drops_running_stats(self.body, body_state))
        use_task_batchnorm(self.body)  # correct second-order gradients under vmap (see the module)
        if spec.scale_shift:
            from mtl.pipeline.models.scale_shift import add_scale_shift

            add_scale_shift(self.body)
        dim = int(self.body.feature_dim)
        self.feature_dim = dim
        if spec.head_init == "learned" and spec.head != "none":
            self.head_weight = nn.Parameter(torch.zeros(dim))
            self.head_bias = nn.Parameter(torch.zeros(()))
        if spec.head == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        if spec.transfer_classes > 0:
            self.transfer = nn.Linear(dim, spec.transfer_classes)
        if spec.learn_lr:
            self.inner_lrs = nn.ParameterDict({_mangle(n): nn.Parameter(torch.full(s, spec.inner_lr))
                                               for n, s in self.adapted_shapes().items()})
        self.train()

    def train(self, mode: bool = True) -> MetaLearner:
        super().train(mode)
        if self.spec.scale_shift:
            self.body.eval()  # the frozen extractor keeps its pretrained BatchNorm statistics
        return self

    def adapted_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the per-parameter step sizes: head shapes broadcast over classes."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.spec.adapt == "all" or self.spec.head == "none":
            shapes.update({n: tuple(self.get_parameter(n).shape) for n in self.adaptable_body()})
        if self.spec.head != "none" and self.spec.adapt != "proto":
            shapes.update({"head.weight": (1, self.feature_dim), "head.bias": (1,)})
        return shapes

    def adaptable_body(self) -> list[str]:
        """Names ("body.*") of the body parameters an `adapt="all"` inner loop updates."""
        return [f"body.{n}" for n, t in self.body.named_parameters() if t.requires_grad]

    # ---- functional pieces (p = dict(self.named_parameters()) or a differentiable copy) ----
    def state_params(self) -> Params:
        return {n: t for n, t in self.named_parameters()}

    def features(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        """Body forward with parameters from `p` ("body.*"); x (M, C, H, W) → (M, D)."""
        tensors = {n[5:]: t for n, t in p.items() if n.startswith("body.")}
        tensors.update({n: b for n, b in self.body.named_buffers()})
        return functional_call(self.body, tensors, (x,))

    def step_sizes(self, p: Params) -> StepSize:
        if not self.spec.learn_lr:
            return self.spec.inner_lr
        return {n: p[f"inner_lrs.{_mangle(n)}"] for n in self.adapted_shapes()}

    def init_head(self, p: Params, feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
        """Head for an n_way task: weight (N, D), bias (N,), from the rule in `spec.head_init`."""
        rule, dim = self.spec.head_init, feats.shape[-1]
        if rule == "learned":
            return {"head.weight": p["head_weight"].expand(n_way, dim) + 0.0,
                    "head.bias": p["head_bias"].expand(n_way) + 0.0}
        if rule == "zero":
            return {"head.weight": feats.new_zeros(n_way, dim), "head.bias": feats.new_zeros(n_way)}
        means = class_means(feats, labels, n_way)
        if self.spec.head == "cosine":
            return {"head.weight": means, "head.bias": feats.new_zeros(n_way)}
        return {"head.weight": 2.0 * means, "head.bias": -(means * means).sum(-1)}

    def head_logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        """feats (M, D) → logits (M, N) with head (W, b) from `fast`."""
        weight, bias = fast["head.weight"], fast["head.bias"]
        if self.spec.head == "cosine":
            scale = p["log_scale"].exp()
            return scale * F.normalize(feats, dim=-1) @ F.normalize(weight, dim=-1).T + bias
        return feats @ weight.T + bias

    def full_logits(self, p: Params, fast: Params, x: torch.Tensor) -> torch.Tensor:
        """Forward of the whole model with body AND head taken from `fast` (adapt="all")."""
        feats = self.features({**p, **fast}, x)
        return feats if self.spec.head == "none" else self.head_logits(p, fast, feats)

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for classification, mean squared error for regression (head "none")."""
        if self.spec.head == "none":
            return F.mse_loss(outputs, targets)
        return F.cross_entropy(outputs, targets)

    def adapt(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
              first_order: bool = False) -> Params:
        """The adapted "fast" parameters for one task, through the shared `inner_adapt`."""
        fast, inputs, loss_fn = self._inner_problem(p, support, labels, n_way)
        return inner_adapt(fast, inputs, labels, steps, self.step_sizes(p), loss_fn=loss_fn, first_order=first_order)

    def adapt_trajectory(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
                         first_order: bool = False) -> Iterator[Params]:
        """The fast parameters after 0 (the initialisation), 1, …, `steps` inner steps of `adapt`."""
        fast, inputs, loss_fn = self._inner_problem(p, support, labels, n_way)
        return inner_trajectory(fast, inputs, labels, steps, self.step_sizes(p), loss_fn=loss_fn,
                                first_order=first_order)

    def _inner_problem(self, p: Params, support: torch.Tensor, labels: torch.Tensor,
                       n_way: int) -> tuple[Params, torch.Tensor, LossFn]:
        """What the inner loop starts from, what it sees and what it minimises: the head on support features
        (adapt="head"), or the body and head on support images (adapt="all")."""
        if self.spec.adapt == "head" and self.spec.head != "none":
            feats = self.features(p, support)

            def head_loss(fast: Params, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.task_loss(self.head_logits(p, fast, f), y)

            return self.init_head(p, feats, labels, n_way), feats, head_loss
        fast = {n: p[n] for n in self.adaptable_body()}
        if self.spec.head != "none":
            fast.update(self.init_head(p, self.features(p, support), labels, n_way))

        def full_loss(fast: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.task_loss(self.full_logits(p, fast, x), y)

        return fast, support, full_loss

    def predict(self, p: Params, fast: Params, query: torch.Tensor) -> torch.Tensor:
        if self.spec.adapt == "head" and self.spec.head != "none":
            return self.head_logits(p, fast, self.features(p, query))
        return self.full_logits(p, fast, query)

    def task_outputs(self, p: Params, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                     n_way: int, steps: int, first_order: bool = False) -> torch.Tensor:
        """Adapt on one task's support set, predict its queries: (Q, N) logits or (Q, 1) values."""
        if self.spec.adapt == "proto":
            return prototype_logits(self.features(p, support), labels, self.features(p, query), n_way)
        fast = self.adapt(p, support, labels, n_way, steps, first_order=first_order)
        return self.predict(p, fast, query)

    def task_outputs_per_step(self, p: Params, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                              n_way: int, steps: int) -> torch.Tensor:
        """Query outputs after 0, 1, …, `steps` first-order inner steps of one task → (S+1, Q, N): the
        accuracy-vs-steps curve of `mtl evaluate --plot` in one pass (query features embedded once
        when only the head adapts)."""
        trajectory = self.adapt_trajectory(p, support, labels, n_way, steps, first_order=True)
        if self.spec.adapt == "head" and self.spec.head != "none":
            feats = self.features(p, query)
            return torch.stack([self.head_logits(p, fast, feats) for fast in trajectory])
        return torch.stack([self.predict(p, fast, query) for fast in trajectory])


def class_means(feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Per-class mean of features (M, D) with labels (M,) in 0..N-1, in any order → (N, D)."""
    onehot = F.one_hot(labels, n_way).to(feats.dtype)  # (M, N)
    return (onehot.T @ feats) / onehot.sum(0)[:, None]


def prototype_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, n_way: int) -> torch.Tensor:
    """−‖q − μ_c‖² for query features (Q, D) against support class means → (Q, N)."""
    means = class_means(support, labels, n_way)
    return -((query[:, None, :] - means[None]) ** 2).sum(-1)
