"""The algorithm protocol: what a meta-learning method decides, in one class per method.

A method is a subclass of `Algorithm` in its own module of `pipeline/algorithms/`, registered with
`@register_algorithm` (see that package). It declares:
- what it is: `name` (its module's name), `paper`, and flags — `inner` (what the inner loop adapts by
  default: "head" or "all"), `head` (a head kind it always uses, e.g. ProtoNet's "prototype"), `needs_init`
  (a pretrained extractor), `learn_lr` (Meta-SGD step sizes), `scale_shift` (MTL), `regression` (sine waves);
- its own hyper-parameters: `Options`, a frozen dataclass (`mtl meta-train --option KEY=VALUE`, or an
  `[options]` table in a config file); the engine passes them on as `hp.options`;
- how it builds its learner (`spec`, `build`), its per-task outputs under vmap (`task_outputs`), its outer
  optimisers and update (`optimizers`, `update`), and what a device gets (`deployable`), or why it cannot.

The defaults are a plain gradient-based meta-learner (MAML's outer loop): a method overrides only what differs.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mtl.pipeline.config import parse_value
from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.meta.batch import Hyper, TaskBatch, fitting_meta_gradient
from mtl.pipeline.meta.inner import Params
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none."""


@dataclass(frozen=True)
class LearnerInputs:
    """What `Algorithm.spec` builds a learner from: the user's choices and the data's shape."""

    backbone: str
    in_channels: int
    image_size: int
    options: dict[str, Any]  # backbone options (from a pretrained checkpoint)
    head: str
    head_init: str
    adapt: str | None  # the user's --adapt, None for the method's default
    inner_lr: float
    train_classes: int  # base classes of the training split (a global classifier's width)


class Algorithm:
    """A meta-learning method. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    paper: ClassVar[str] = ""
    inner: ClassVar[str] = "all"
    head: ClassVar[str | None] = None
    needs_init: ClassVar[bool] = False
    learn_lr: ClassVar[bool] = False
    scale_shift: ClassVar[bool] = False
    regression: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions
    # how the method is benchmarked (benchmarks/accuracy_grid.py): variant suffix → `mtl meta-train` settings
    # (MetaTrainConfig fields; "options" for its own), e.g. Reptile's outer step size; "" is the plain method
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"": {}}

    # ---- configuration
    def parse_options(self, raw: dict[str, Any]) -> Any:
        """`raw` (from a config file, or strings from --option KEY=VALUE) → this method's `Options`; unknown
        keys and values of the wrong type are a `ConfigError` naming them."""
        if not isinstance(raw, dict):
            raise ConfigError(f"--algorithm {self.name}: options must be KEY=VALUE pairs, got {raw!r:.60}")
        fields = {f.name: f for f in dataclasses.fields(self.Options)}
        hints = typing.get_type_hints(self.Options)
        values = {}
        for key, value in raw.items():
            name = key.replace("-", "_")
            if name not in fields:
                valid = ", ".join(f.replace("_", "-") for f in fields) or "none"
                raise ConfigError(f"--algorithm {self.name} has no option {key!r}; its options: {valid}")
            values[name] = parse_value(f"--option {key}", value, hints[name])
        try:
            return self.Options(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--algorithm {self.name}: {exc}") from None

    def spec(self, given: LearnerInputs) -> LearnerSpec:
        """The learner this method trains, from the user's choices (the method's own flags win)."""
        adapt = self.inner if given.adapt is None or self.head == "prototype" else given.adapt
        return LearnerSpec(backbone=given.backbone, in_channels=given.in_channels, image_size=given.image_size,
                           options=dict(given.options), head=self.head or given.head,
                           head_init="proto" if self.head == "prototype" else given.head_init, adapt=adapt,
                           scale_shift=self.scale_shift, learn_lr=self.learn_lr, inner_lr=given.inner_lr)

    def build(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> MetaLearner:
        return MetaLearner(spec, body_state)

    def adaptation_steps(self, inner_steps: int) -> int:
        """The steps a model of this method adapts with after training (validation, evaluation, a device's
        default): the inner loop's, unless the method classifies without one."""
        return inner_steps

    # ---- training
    def task_outputs(self, learner: MetaLearner, p: Params, support: torch.Tensor, labels: torch.Tensor,
                     query: torch.Tensor, n_way: int, steps: int, first_order: bool) -> torch.Tensor:
        """One task under vmap: adapt on the support set, predict the queries → (Q, N) logits."""
        return learner.task_outputs(p, support, labels, query, n_way, steps, first_order)

    def optimizers(self, learner: MetaLearner, lr: float, hp: Hyper) -> list[torch.optim.Optimizer]:
        """The outer optimisers: Adam over every trainable meta-parameter."""
        return [torch.optim.Adam([t for t in learner.parameters() if t.requires_grad], lr=lr)]

    def update(self, learner: MetaLearner, batch: TaskBatch, optimizers: list[torch.optim.Optimizer],
               hp: Hyper) -> dict[str, torch.Tensor]:
        """One outer step: θ ← opt(θ, ∇θ mean query loss) through the vmapped meta-batch."""
        optimizers[0].zero_grad(set_to_none=True)
        metrics = fitting_meta_gradient(learner, batch, hp, task=self.task)
        optimizers[0].step()
        return metrics

    @property
    def task(self) -> Any:
        """`task_outputs` where a method overrides it, else None (the learner's own, which torch.compile sees
        as one function across steps)."""
        return None if type(self).task_outputs is Algorithm.task_outputs else self.task_outputs

    # ---- deployment
    def deployable(self, learner: MetaLearner, adapt: str | None, path: object) -> MetaLearner:
        """The learner a device runs: a frozen body and a head that adapts on features. A learner whose inner
        loop adapted the body is refused (with the reason) unless `adapt` is "head"."""
        if adapt not in (None, "head"):
            raise ConfigError(f"--adapt must be head, got {adapt!r}: a device adapts the head on features")
        if learner.head.regression:
            raise CheckpointError(f"{path} is a regression model; only image classifiers export to a bundle")
        if learner.adapts_body and adapt != "head":
            convs = [n for n in learner.adaptable_body() if n.endswith("weight")]
            raise CheckpointError(
                f"{path}: its inner loop adapted the body ({len(convs)} weight tensors, e.g. {convs[0]}), which "
                "the device graph cannot update yet (no ONNX translation of convolution gradients); export with "
                "--adapt head to ship the body frozen and adapt the head only")
        head = learner.head.deploy()
        if not learner.adapts_body and head is learner.head:
            return learner.eval()
        spec = dataclasses.replace(learner.spec, adapt="head", head=head.kind, head_init=head.rule)
        frozen = self.build(spec)  # the method's own learner: a learned update rule stays the device's rule
        frozen.load_state_dict(learner.state_dict(), strict=False)  # drops the body's step sizes only
        return frozen.eval()
