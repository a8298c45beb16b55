"""CAML / CAVIA (Zintgraf et al. 2019, "Fast Context Adaptation via Meta-Learning").

The parameters split into shared θ, learned in the outer loop only, and a small per-task context vector φ,
reset to φ₀ = 0 for every task; the inner loop adapts ONLY φ:

    φ_k = φ_{k−1} − α ∇φ L_support(θ, φ_{k−1}),        θ ← θ − β ∇θ Σ_tasks L_query(θ, φ_k).

How φ enters the network (the paper's choices):
- sine waves (`--data sinusoid`, MLP): φ (4 numbers) is concatenated to the input. Implemented as what that
  concatenation computes, W_x·x + W_φ·φ + b at the first layer, so the body stays the plain MLP;
- images (Conv-4): φ (100 numbers) conditions the network by FiLM after the BatchNorm of the third block:
  h ← γ(φ) ⊙ h + β(φ) per channel, with (γ − 1, β) = W·φ + b and b = 0, so φ = 0 is the identity.

The classifier follows mtl's head rules so that one model serves any number of classes: the head is
initialised from the support features AS CONDITIONED BY φ (`--head-init proto`, the default here; a learned or
zero start is the same vector for every class and gives φ no gradient), recomputed at every inner step.

On a device: the context update is not exported yet (it needs the gradient back through the blocks after the
FiLM, whose convolution and max-pool backward have no ONNX translation in torch's exporter), so `mtl export`
says so and `--adapt head` ships the extractor at φ = 0 (where FiLM is the identity) with head adaptation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call

from mtl.pipeline.algorithms import register_algorithm
from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.meta.algorithm import Algorithm, LearnerInputs
from mtl.pipeline.meta.inner import LossFn, Params, inner_adapt, inner_trajectory
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner

CONTEXT = {"conv4": 100, "mlp": 4}  # the context vector's size (Zintgraf et al.: 100 for images, 4 for sine waves)
FILM_BLOCK = 2  # FiLM after the BatchNorm of this Conv-4 block (0-based: the third, as the paper)


def _sub(params: Params, prefix: str) -> Params:
    return {n[len(prefix):]: t for n, t in params.items() if n.startswith(prefix)}


class CAMLLearner(MetaLearner):
    """A `MetaLearner` whose inner loop adapts a context vector φ that conditions the body, and nothing else."""

    def __init__(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> None:
        if spec.backbone not in CONTEXT:
            raise ConfigError(f"--algorithm caml conditions a conv4 (images) or mlp (sine waves) body, not "
                              f"{spec.backbone!r}")
        if spec.learn_lr or spec.scale_shift or spec.freeze_body:
            raise ConfigError("--algorithm caml adapts its context with one step size; it has no learned step "
                              "sizes, scale/shift or frozen body")
        super().__init__(spec, body_state)
        self.context_dim = CONTEXT[spec.backbone]
        if spec.backbone == "conv4":
            self.film_at = min(FILM_BLOCK, len(self.body.blocks) - 1)
            channels = self.body.blocks[self.film_at][0].out_channels
            self.film = nn.Linear(self.context_dim, 2 * channels)  # (γ − 1, β); default init: φ gets a gradient
            nn.init.zeros_(self.film.bias)
        else:
            self.film = nn.Linear(self.context_dim, self.body.layers[0].out_features, bias=False)  # W_φ

    @property
    def adapts_body(self) -> bool:
        return True  # what it adapts sits inside the body: evaluation adapts on images, not on features

    def context_features(self, p: Params, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The body's forward with parameters from `p`, conditioned on the context φ (d,): x → features."""
        body = {**_sub(p, "body."), **dict(self.body.named_buffers())}
        film = _sub(p, "film.")
        if self.spec.backbone == "mlp":
            layers = list(self.body.layers)
            x = functional_call(layers[0], _sub(body, "layers.0."), (x,)) + phi @ film["weight"].T
            for j, layer in enumerate(layers[1:], start=1):
                x = functional_call(layer, _sub(body, f"layers.{j}."), (x,))
            return x
        for i, block in enumerate(self.body.blocks):
            for j, layer in enumerate(block):
                x = functional_call(layer, _sub(body, f"blocks.{i}.{j}."), (x,))
                if i == self.film_at and j == 1:  # after the BatchNorm, before the ReLU
                    gamma, beta = (phi @ film["weight"].T + film["bias"]).chunk(2)
                    x = x * (1 + gamma)[:, None, None] + beta[:, None, None]
        return x.flatten(1)

    def _problem(self, p: Params, support: torch.Tensor, labels: torch.Tensor,
                 n_way: int) -> tuple[Params, LossFn]:
        def support_loss(fast: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            feats = self.context_features(p, x, fast["context"])
            return self.task_loss(self.head_logits(p, self.init_head(p, feats, y, n_way), feats), y)

        return {"context": support.new_zeros(self.context_dim)}, support_loss  # φ₀ = 0 for every task

    def _with_head(self, p: Params, fast: Params, support: torch.Tensor, labels: torch.Tensor,
                   n_way: int) -> Params:
        """The adapted context and the head its support features give."""
        return {**fast, **self.init_head(p, self.context_features(p, support, fast["context"]), labels, n_way)}

    def adapt(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
              first_order: bool = False) -> Params:
        fast, loss_fn = self._problem(p, support, labels, n_way)
        fast = inner_adapt(fast, support, labels, steps, self.spec.inner_lr, loss_fn=loss_fn, first_order=first_order)
        return self._with_head(p, fast, support, labels, n_way)

    def adapt_trajectory(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
                         first_order: bool = False) -> Iterator[Params]:
        fast, loss_fn = self._problem(p, support, labels, n_way)
        for adapted in inner_trajectory(fast, support, labels, steps, self.spec.inner_lr, loss_fn=loss_fn,
                                        first_order=first_order):
            yield self._with_head(p, adapted, support, labels, n_way)

    def predict(self, p: Params, fast: Params, query: torch.Tensor) -> torch.Tensor:
        return self.head_logits(p, fast, self.context_features(p, query, fast["context"]))


@register_algorithm
class CAML(Algorithm):
    name = "caml"
    paper = "Zintgraf et al. 2019"
    inner = "head"
    regression = True

    def spec(self, given: LearnerInputs) -> LearnerSpec:
        base = super().spec(given)
        return dataclasses.replace(base, adapt="head", head_init="proto" if given.head_init == "learned"
                                   else given.head_init)

    def build(self, spec: LearnerSpec, body_state: dict[str, torch.Tensor] | None = None) -> MetaLearner:
        return CAMLLearner(spec, body_state)

    def deployable(self, learner: MetaLearner, adapt: str | None, path: object) -> MetaLearner:
        if learner.head.regression:
            raise CheckpointError(f"{path} is a regression model; only image classifiers export to a bundle")
        if adapt != "head":
            raise CheckpointError(
                f"{path}: CAML adapts a context vector inside the extractor, whose update the device graphs cannot "
                "run yet (no ONNX translation of the convolution and max-pool gradients after the FiLM); export "
                "with --adapt head to ship the extractor at context 0 and adapt the head on the device")
        frozen = MetaLearner(dataclasses.replace(learner.spec, adapt="head"))
        frozen.load_state_dict(learner.state_dict(), strict=False)  # φ = 0: the FiLM is the identity, dropped
        return frozen.eval()
