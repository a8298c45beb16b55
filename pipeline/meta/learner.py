"""`MetaLearner` = a body (backbone) + a few-shot task head, used functionally by every algorithm.

The head object (`pipeline.meta.heads`) decides how a task's classifier starts, scores and whether it adapts;
the spec's `adapt` says what the inner loop updates: `head` (the head on support features, computed once per
task: ANIL, MTL) or `all` (body and head on support images: MAML). With `scale_shift` the body is frozen in
eval mode and modulated per channel (Sun et al. 2019). Learned per-parameter step sizes (`learn_lr`, Meta-SGD)
are shaped like the adapted tensors, with head shapes broadcast over classes so any N works.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.heads import TASK_HEADS, TaskHead, build_task_head
from mtl.pipeline.meta.inner import LossFn, Params, StepSize, inner_adapt, inner_trajectory
from mtl.pipeline.models import build_backbone
from mtl.pipeline.models.task_batchnorm import use_task_batchnorm

ADAPT_SCOPES = ("head", "all")


@dataclass(frozen=True)
class LearnerSpec:
    """Everything needed to rebuild a `MetaLearner` (stored in every meta-training checkpoint)."""

    backbone: str
    in_channels: int
    image_size: int
    options: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"  # a TASK_HEADS kind: linear | cosine | prototype | none (regression)
    head_init: str = "learned"
    adapt: str = "all"  # what the inner loop adapts: head | all
    scale_shift: bool = False
    freeze_body: bool = False  # a pretrained extractor used as it is: eval mode, running statistics, no gradients
    running_stats: bool = False  # BatchNorm keeps its (pretrained) running statistics, in eval mode; weights learn
    learn_lr: bool = False
    inner_lr: float = 0.4
    transfer_classes: int = 0  # > 0: a global classifier over the base classes (joint meta-transfer)

    def __post_init__(self) -> None:
        if self.head not in TASK_HEADS:
            raise ConfigError(f"unknown head {self.head!r}; choose from {', '.join(TASK_HEADS)}")
        if self.adapt not in ADAPT_SCOPES:
            raise ConfigError(f"unknown --adapt {self.adapt!r}; choose head or all")
        if not 0 < self.inner_lr < math.inf:
            raise ConfigError(f"inner lr must be positive and finite, got {self.inner_lr}")

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
    """`body` + `head` (a `TaskHead`), optional learned inner step sizes and a global transfer classifier."""

    def __init__(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None, *,
                 body: nn.Module | None = None) -> None:
        """`body_state`: pretrained backbone weights, loaded before any scale/shift wrapping; `body`: a backbone
        module to use as it is (shared, e.g. the model a pretraining run validates), instead of building one."""
        super().__init__()
        self.spec = spec
        options = dict(spec.options)
        if not self.frozen:  # per-task batch statistics: nothing stateful under vmap
            options.setdefault("track_running_stats", False)
        self.body = body if body is not None else build_backbone(spec.backbone, in_channels=spec.in_channels,
                                                                 image_size=spec.image_size, **options)
        if body_state is not None:
            from mtl.pipeline.train.checkpoint import load_weights  # late: train imports the learner

            load_weights(self.body, body_state, "the pretrained (--init) checkpoint",
                         strict=not _drops_running_stats(self.body, body_state))
        use_task_batchnorm(self.body)  # correct second-order gradients under vmap (see the module)
        if spec.scale_shift:
            from mtl.pipeline.models.scale_shift import add_scale_shift

            add_scale_shift(self.body)
        elif spec.freeze_body and body is None:
            self.body.requires_grad_(False)
        self.feature_dim = int(self.body.feature_dim)
        self.head: TaskHead = build_task_head(spec.head, self.feature_dim, spec.head_init)
        if spec.adapt == "head" and self.head.regression:
            raise ConfigError("a regression model has no head to adapt alone; use --adapt all")
        if spec.adapt == "all" and spec.freeze_body:
            raise ConfigError("a frozen body cannot be adapted; use adapt head")
        if spec.transfer_classes > 0:
            self.transfer = nn.Linear(self.feature_dim, spec.transfer_classes)
        if spec.learn_lr:
            self.inner_lrs = nn.ParameterDict({_mangle(n): nn.Parameter(torch.full(s, spec.inner_lr))
                                               for n, s in self.adapted_shapes().items()})
        self.train()

    @property
    def frozen(self) -> bool:
        """The body normalises with running statistics in eval mode, never per task: a pretrained extractor kept
        as it is (MTL modulates it, a transfer learner uses it), or fine-tuned with its statistics fixed."""
        return self.spec.scale_shift or self.spec.freeze_body or self.spec.running_stats

    def train(self, mode: bool = True) -> MetaLearner:
        super().train(mode)
        if self.frozen:
            self.body.eval()  # the frozen extractor keeps its pretrained BatchNorm statistics
        return self

    @property
    def adapts_body(self) -> bool:
        return self.spec.adapt == "all" or self.head.regression

    def adapted_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the per-parameter step sizes: head shapes broadcast over classes."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.adapts_body:
            shapes.update({n: tuple(self.get_parameter(n).shape) for n in self.adaptable_body()})
        if self.head.adapts and not self.head.regression:
            shapes.update({"head.weight": (1, self.feature_dim), "head.bias": (1,)})
        return shapes

    def adaptable_body(self) -> list[str]:
        """Names ("body.*") of the body parameters an `adapt="all"` inner loop updates."""
        return [f"body.{n}" for n, t in self.body.named_parameters() if t.requires_grad]

    # ---- functional pieces (p = dict(self.named_parameters()) or a differentiable copy) ----
    def state_params(self) -> Params:
        return dict(self.named_parameters())

    def features(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        """Body forward with parameters from `p` ("body.*"); x (M, C, H, W) → (M, D)."""
        tensors = {n[5:]: t for n, t in p.items() if n.startswith("body.")}
        tensors.update(dict(self.body.named_buffers()))
        return functional_call(self.body, tensors, (x,))

    @staticmethod
    def head_params(p: Params) -> Params:
        """The head's meta-parameters from `p`, by the head module's own names."""
        return {n[5:]: t for n, t in p.items() if n.startswith("head.")}

    def step_sizes(self, p: Params) -> StepSize:
        if not self.spec.learn_lr:
            return self.spec.inner_lr
        return {n: p[f"inner_lrs.{_mangle(n)}"] for n in self.adapted_shapes()}

    def init_head(self, p: Params, feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
        """The fast head of an n_way task (the head's rule) from support features (M, D)."""
        return self.head.init_from_labels(self.head_params(p), feats, labels, n_way)

    def head_logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        """feats (M, D) → logits (M, N) of the fast head."""
        return self.head.logits(self.head_params(p), fast, feats)

    def full_logits(self, p: Params, fast: Params, x: torch.Tensor) -> torch.Tensor:
        """Forward of the whole model with body AND head taken from `fast` (adapt="all")."""
        return self.head_logits(p, fast, self.features({**p, **fast}, x))

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The head's loss: cross-entropy for classification, mean squared error for regression."""
        return self.head.loss(outputs, targets)

    def adapt(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
              first_order: bool = False) -> Params:
        """The adapted "fast" parameters for one task, through the shared `inner_adapt`."""
        fast, inputs, loss_fn = self.inner_problem(p, support, labels, n_way)
        steps = steps if self.head.adapts else 0
        return self.update_rule_adapt(p, fast, inputs, labels, steps, loss_fn, first_order)

    def adapt_trajectory(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
                         first_order: bool = False) -> Iterator[Params]:
        """The fast parameters after 0 (the initialisation), 1, …, `steps` inner steps of `adapt`."""
        fast, inputs, loss_fn = self.inner_problem(p, support, labels, n_way)
        steps = steps if self.head.adapts else 0
        return self.update_rule_trajectory(p, fast, inputs, labels, steps, loss_fn, first_order)

    def head_trajectory(self, p: Params, feats: torch.Tensor, labels: torch.Tensor, n_way: int,
                        steps: int) -> Iterator[Params]:
        """The fast head after 0, 1, …, `steps` first-order inner steps on support FEATURES (M, D): what a device
        runs; evaluation calls it on features embedded once."""
        fast, feats, loss_fn = self.head_problem(p, feats, labels, n_way)
        steps = steps if self.head.adapts else 0
        return self.update_rule_trajectory(p, fast, feats, labels, steps, loss_fn, True)

    # ---- the update rule: SGD (`inner_step`), which a learned optimiser overrides (`state_size` > 0)
    state_size = 0  # per-coordinate state the rule carries from step to step (0: none, plain SGD)
    # the size of a context vector the device adapts inside the body (0: none; CAML's learner defines
    # `context_prefix`, `context_suffix` and `context_loss`, which the device graphs trace)
    context_size = 0

    def update_rule_adapt(self, p: Params, fast: Params, inputs: torch.Tensor, labels: torch.Tensor, steps: int,
                          loss_fn: LossFn, first_order: bool) -> Params:
        """`steps` updates of `fast` on one task's inputs (a plain loop, which vmap and torch.compile see)."""
        return inner_adapt(fast, inputs, labels, steps, self.step_sizes(p), loss_fn=loss_fn, first_order=first_order)

    def update_rule_trajectory(self, p: Params, fast: Params, inputs: torch.Tensor, labels: torch.Tensor,
                               steps: int, loss_fn: LossFn, first_order: bool) -> Iterator[Params]:
        """`fast` after 0, 1, …, `steps` updates (the same ones as `update_rule_adapt`)."""
        return inner_trajectory(fast, inputs, labels, steps, self.step_sizes(p), loss_fn=loss_fn,
                                first_order=first_order)

    def head_problem(self, p: Params, feats: torch.Tensor, labels: torch.Tensor,
                     n_way: int) -> tuple[Params, torch.Tensor, LossFn]:
        """The head's inner problem on support features: its initialisation, the features, its loss."""

        def head_loss(fast: Params, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.task_loss(self.head_logits(p, fast, f), y)

        return self.init_head(p, feats, labels, n_way), feats, head_loss

    def inner_problem(self, p: Params, support: torch.Tensor, labels: torch.Tensor,
                      n_way: int) -> tuple[Params, torch.Tensor, LossFn]:
        """What the inner loop starts from, what it sees and what it minimises: the head on support features
        (adapt="head"), or the body and head on support images (adapt="all")."""
        if not self.adapts_body:
            return self.head_problem(p, self.features(p, support), labels, n_way)
        fast = {n: p[n] for n in self.adaptable_body()}
        fast.update(self.init_head(p, self.features(p, support), labels, n_way))

        def full_loss(fast: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.task_loss(self.full_logits(p, fast, x), y)

        return fast, support, full_loss

    def predict(self, p: Params, fast: Params, query: torch.Tensor) -> torch.Tensor:
        if not self.adapts_body:
            return self.head_logits(p, fast, self.features(p, query))
        return self.full_logits(p, fast, query)

    def task_outputs(self, p: Params, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                     n_way: int, steps: int, first_order: bool = False) -> torch.Tensor:
        """Adapt on one task's support set, predict its queries: (Q, N) logits or (Q, 1) values."""
        fast = self.adapt(p, support, labels, n_way, steps, first_order=first_order)
        return self.predict(p, fast, query)
