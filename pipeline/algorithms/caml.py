"""CAML / CAVIA (Zintgraf et al. 2019, "Fast Context Adaptation via Meta-Learning").

The parameters split into shared θ, learned in the outer loop only, and a small per-task context vector φ,
reset to φ₀ = 0 for every task; the inner loop adapts ONLY φ:

    φ_k = φ_{k−1} − α ∇φ L_support(θ, φ_{k−1}),        θ ← θ − β ∇θ Σ_tasks L_query(θ, φ_k).

How φ enters the network (the paper's choices):
- sine waves (`--data sinusoid`, MLP): φ (4 numbers) is concatenated to the input. Implemented as what that
  concatenation computes, W_x·x + W_φ·φ + b at the first layer, so the body stays the plain MLP;
- images (Conv-4): φ (100 numbers) conditions the network by FiLM after the BatchNorm of the third block:
  h ← γ(φ) ⊙ h + β(φ) per channel, with (γ − 1, β) = W·φ + b and b initialised to 0, so φ = 0 starts as the
  identity (b trains: the extractor at φ = 0 folds it into the BatchNorm, `body_at_zero_context`).

The classifier follows mtl's head rules so that one model serves any number of classes: the head is
initialised from the support features AS CONDITIONED BY φ (`--head-init proto`, the default here; a learned or
zero start is the same vector for every class and gives φ no gradient), recomputed at every inner step.

On a device: `mtl export` ships the context update (image models): embed_prefix.onnx (the layers before the FiLM),
context_step.onnx (one step of φ: the gradient back through the blocks after the FiLM, whose convolution and
max-pool backward `exporters.gradients` writes in standard ops) and embed_suffix.onnx; the device adapts φ, then
initialises the head from the φ-conditioned features, exactly as here (docs/bundle.md). `--adapt head` ships the
extractor at φ = 0 (its FiLM folded into the BatchNorm) with head adaptation only.
"""

from __future__ import annotations

import copy
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
        self.context_dim = self.context_size = CONTEXT[spec.backbone]
        if spec.backbone == "conv4":
            self.film_at = min(FILM_BLOCK, len(self.body.blocks) - 1)
            channels = self.body.blocks[self.film_at][0].out_channels
            self.film = nn.Linear(self.context_dim, 2 * channels)  # (γ − 1, β); default init: φ gets a gradient
            nn.init.zeros_(self.film.bias)
        else:
            self.film = nn.Linear(self.context_dim, self.body.layers[0].out_features, bias=False)  # W_φ

    def body_at_zero_context(self) -> nn.Module:
        """A copy of the body that computes `context_features(p, x, 0)`: at φ = 0 the FiLM is (1 + γ₀, β₀) from its
        trained bias, folded into the BatchNorm it follows (the MLP's W_φ·0 adds nothing)."""
        body = copy.deepcopy(self.body)
        if self.spec.backbone == "conv4":
            norm = body.blocks[self.film_at][1]
            gamma, beta = self.film.bias.detach().chunk(2)
            with torch.no_grad():
                norm.bias.mul_(1 + gamma).add_(beta)
                norm.weight.mul_(1 + gamma)
        return body

    @property
    def adapts_body(self) -> bool:
        return True  # what it adapts sits inside the body: evaluation adapts on images, not on features

    def context_prefix(self, p: Params, x: torch.Tensor) -> torch.Tensor:
        """The layers before φ's injection point, with parameters from `p`: images → hidden (what φ conditions).
        Conv-4: the blocks up to the FiLM block's BatchNorm; MLP: the first layer's W_x·x + b."""
        body = {**_sub(p, "body."), **dict(self.body.named_buffers())}
        if self.spec.backbone == "mlp":
            return functional_call(self.body.layers[0], _sub(body, "layers.0."), (x,))
        for i, block in enumerate(self.body.blocks[:self.film_at + 1]):
            for j, layer in enumerate(block if i < self.film_at else block[:2]):
                x = functional_call(layer, _sub(body, f"blocks.{i}.{j}."), (x,))
        return x

    def context_suffix(self, p: Params, h: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The rest of the body, conditioned on the context φ (d,): hidden → features. The device adapts φ by
        differentiating this (`exporters.graphs`)."""
        body = {**_sub(p, "body."), **dict(self.body.named_buffers())}
        film = _sub(p, "film.")
        if self.spec.backbone == "mlp":
            layers = list(self.body.layers)
            h = h + phi @ film["weight"].T
            for j, layer in enumerate(layers[1:], start=1):
                h = functional_call(layer, _sub(body, f"layers.{j}."), (h,))
            return h
        gamma, beta = (phi @ film["weight"].T + film["bias"]).chunk(2)
        h = h * (1 + gamma)[:, None, None] + beta[:, None, None]  # FiLM: after the BatchNorm, before the ReLU
        for i in range(self.film_at, len(self.body.blocks)):
            block = self.body.blocks[i]
            for j in range(2 if i == self.film_at else 0, len(block)):
                h = functional_call(block[j], _sub(body, f"blocks.{i}.{j}."), (h,))
        return h.flatten(1)

    def context_features(self, p: Params, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The body's forward with parameters from `p`, conditioned on the context φ (d,): x → features."""
        return self.context_suffix(p, self.context_prefix(p, x), phi)

    def context_loss(self, p: Params, h: torch.Tensor, phi: torch.Tensor, onehot: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
        """THE support loss the inner loop descends, from the hidden activations of the support set: the head
        its φ-conditioned features initialise (the head's rule), scored on those features."""
        feats = self.context_suffix(p, h, phi)
        return self.task_loss(self.head_logits(p, self.head.init(self.head_params(p), feats, onehot), feats), labels)

    def _problem(self, p: Params, labels: torch.Tensor, n_way: int) -> tuple[Params, LossFn]:
        onehot = (labels[:, None] == torch.arange(n_way, device=labels.device)).float()

        def support_loss(fast: Params, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.context_loss(p, h, fast["context"], onehot.to(h.dtype), y)

        return {"context": p["film.weight"].new_zeros(self.context_dim)}, support_loss  # φ₀ = 0 for every task

    def _with_head(self, p: Params, fast: Params, h: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
        """The adapted context and the head its support features give."""
        return {**fast, **self.init_head(p, self.context_suffix(p, h, fast["context"]), labels, n_way)}

    def adapt(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
              first_order: bool = False) -> Params:
        fast, loss_fn = self._problem(p, labels, n_way)
        h = self.context_prefix(p, support)  # φ enters after it: computed once for every step
        fast = inner_adapt(fast, h, labels, steps, self.spec.inner_lr, loss_fn=loss_fn, first_order=first_order)
        return self._with_head(p, fast, h, labels, n_way)

    def adapt_trajectory(self, p: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int, steps: int, *,
                         first_order: bool = False) -> Iterator[Params]:
        fast, loss_fn = self._problem(p, labels, n_way)
        h = self.context_prefix(p, support)
        for adapted in inner_trajectory(fast, h, labels, steps, self.spec.inner_lr, loss_fn=loss_fn,
                                        first_order=first_order):
            yield self._with_head(p, adapted, h, labels, n_way)

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
        if adapt == "all":
            raise CheckpointError(f"{path}: CAML adapts its context vector, never the extractor's weights: export "
                                  "without --adapt (the context adapts on the device) or with --adapt head (context 0)")
        if adapt is None:
            return learner.eval()  # the device adapts φ through the exported context graphs
        frozen = MetaLearner(dataclasses.replace(learner.spec, adapt="head"))
        frozen.load_state_dict(learner.state_dict(), strict=False)
        frozen.body = learner.body_at_zero_context()  # the extractor at φ = 0: the FiLM's bias folded in
        return frozen.eval()
