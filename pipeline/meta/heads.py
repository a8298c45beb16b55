"""Few-shot heads: what a task's classifier starts from (`init`), how it scores (`logits`), whether an inner loop
adapts it, and what it is on a device (`deploy`). One object per kind, so no code branches on a head's name.

A task head is not a fixed (N, D) matrix: it is initialised per task for however many classes the task has,
so one learned model adapts to any N (training N need not be device N). Its per-task parameters are the
"fast" tensors `head.weight` (N, D) and `head.bias` (N,); its META-parameters (a learned initialisation, a
learned temperature) are parameters of this module, read functionally from a parameter dict `p` (the
module's own names, e.g. `init_weight`), so vmap and second-order gradients reach them.

Initialisation rules (`init`):
- `learned`: one shared class vector w (D,) and bias b, replicated per class (zero-symmetry init;
  Ye & Chao, "How to train your MAML to excel in few-shot classification", ICLR 2022);
- `proto`: from the support features' class means μ_c (Proto-MAML; Triantafillou et al. 2020):
  linear W_c = 2·μ_c, b_c = −‖μ_c‖², which ranks classes exactly as −‖f − μ_c‖² does; cosine W_c = μ_c/‖μ_c‖;
- `zero`: W = 0, b = 0.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mtl.device_runtime.calibration import Temperature
from mtl.device_runtime.schema import HEAD_INITS
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models.heads import COSINE_INIT_SCALE

Params = dict[str, torch.Tensor]
FAST = ("head.weight", "head.bias")


def class_means(feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Per-class mean of features (M, D) with labels (M,) in 0..N-1, in any order → (N, D)."""
    return onehot_means(feats, F.one_hot(labels, n_way).to(feats.dtype))


def onehot_means(feats: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per-class mean of features (M, D) given one-hot labels (M, N) → (N, D)."""
    return (onehot.T @ feats) / onehot.sum(0)[:, None]


def prototype_logits(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """−‖q − μ_c‖² of queries (..., Q, D) against prototypes (..., N, D) → (..., Q, N) (Snell et al. 2017).

    Expanded as 2q·μ − ‖μ‖² − ‖q‖², so a batch of episodes needs no (Q, N, D) difference tensor."""
    return (2.0 * query @ prototypes.transpose(-1, -2) - (prototypes * prototypes).sum(-1)[..., None, :]
            - (query * query).sum(-1, keepdim=True))


class TaskHead(nn.Module):
    """Base of the few-shot heads. Subclasses set `kind` and implement `init_fast` and `logits`."""

    kind: ClassVar[str]
    adapts: ClassVar[bool] = True  # does an inner loop update it (False: prototypes, no steps)
    regression: ClassVar[bool] = False
    rules: ClassVar[tuple[str, ...]] = HEAD_INITS

    def __init__(self, dim: int, rule: str) -> None:
        super().__init__()
        if rule not in self.rules:
            raise ConfigError(f"the {self.kind} head starts from {' or '.join(self.rules)}, not {rule!r}")
        self.dim, self.rule = dim, rule
        # probabilities are softmax(T · logits), T = temperature.at(N, K): post-hoc temperature scaling (Guo et al.
        # 2017) fitted on validation classes (`pipeline.train.calibrate`); confidences only, never a prediction
        self.temperature = Temperature()
        if rule == "learned":
            self.init_weight = nn.Parameter(torch.zeros(dim))
            self.init_bias = nn.Parameter(torch.zeros(()))

    def init(self, p: Params, feats: torch.Tensor, onehot: torch.Tensor) -> Params:
        """The fast head of a task from its support features (M, D) and one-hot labels (M, N): `head.weight`
        (N, D), `head.bias` (N,). `p` holds this module's meta-parameters by their own names. Written on the
        one-hot labels so that N is a tensor dimension: the exporter traces this very function into
        init_head.onnx with N dynamic."""
        n_way = onehot.shape[-1]
        if self.rule == "learned":
            return {"head.weight": p["init_weight"].expand(n_way, self.dim) + 0.0,
                    "head.bias": p["init_bias"].expand(n_way) + 0.0}
        if self.rule == "zero":
            return {"head.weight": feats.new_zeros(n_way, self.dim), "head.bias": feats.new_zeros(n_way)}
        return self.from_means(onehot_means(feats, onehot))

    def init_from_labels(self, p: Params, feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
        """`init` from class labels (M,) in 0..N-1 (one-hot by comparison: F.one_hot checks its values with
        `.item()`, which torch.func.grad under vmap — ADML's FGSM on a support set — cannot run)."""
        onehot = labels[:, None] == torch.arange(n_way, device=labels.device)
        return self.init(p, feats, onehot.to(feats.dtype))

    def from_means(self, means: torch.Tensor) -> Params:
        raise NotImplementedError

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        """Features (M, D) → logits (M, N) with the fast head."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def deploy(self) -> TaskHead:
        """The head a device runs: itself, unless it has a linear form that adapts there (prototypes)."""
        return self


class LinearTaskHead(TaskHead):
    """logits = f·Wᵀ + b."""

    kind = "linear"

    def from_means(self, means: torch.Tensor) -> Params:
        return {"head.weight": 2.0 * means, "head.bias": -(means * means).sum(-1)}

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        return feats @ fast["head.weight"].T + fast["head.bias"]


class CosineTaskHead(TaskHead):
    """logits = s·cos(f, W_c) + b_c with a learned temperature s = exp(log_scale) (Gidaris & Komodakis 2018;
    Chen et al. 2019), initialised at `COSINE_INIT_SCALE`. A zero class vector has no direction: no `zero` rule."""

    kind = "cosine"
    rules = ("learned", "proto")

    def __init__(self, dim: int, rule: str) -> None:
        if rule == "zero":
            raise ConfigError("a cosine head cannot start from zero class vectors (their direction is undefined); "
                              "use --head-init learned or proto")
        super().__init__(dim, rule)
        self.log_scale = nn.Parameter(torch.tensor(math.log(COSINE_INIT_SCALE)))

    def from_means(self, means: torch.Tensor) -> Params:
        # unit class vectors: the logits see only their direction, but a gradient step's effect scales with
        # 1/‖W_c‖², so the class means of raw features (norms in the tens) would make SGD a no-op
        return {"head.weight": F.normalize(means, dim=-1), "head.bias": means.new_zeros(means.shape[0])}

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(feats, dim=-1) @ F.normalize(fast["head.weight"], dim=-1).T
        return p["log_scale"].exp() * cosine + fast["head.bias"]


class PrototypeTaskHead(TaskHead):
    """Nearest class mean (Prototypical Networks, Snell et al. 2017): no inner loop, logits −‖f − μ_c‖². On a
    device it is the `proto`-initialised linear head, which classifies identically at step 0 and can take steps."""

    kind = "prototype"
    adapts = False
    rules = ("proto",)

    def from_means(self, means: torch.Tensor) -> Params:
        return {"head.prototypes": means}

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        return prototype_logits(feats, fast["head.prototypes"])

    def deploy(self) -> TaskHead:
        return LinearTaskHead(self.dim, "proto")


class SiameseTaskHead(TaskHead):
    """Koch et al. 2015's similarity as a task head: a class's vector is its support embedding W_c (the class
    mean when K > 1) and a query's logit for class c is the twin network's pre-sigmoid similarity,
    Σ_j α_j |f_j − W_cj| + β (+ b_c, 0 at the start): the weighted L1 distance of the paper with learned component
    weights α (D,) and β. One-shot classification is then "the support image of highest similarity"; on a device
    predict.onnx scores the queries against the stored embeddings. Trained on same/different pairs by the
    `siamese` algorithm; the head's vectors may still take SGD steps on a device (the calibration decides)."""

    kind = "siamese"
    rules = ("proto",)

    def __init__(self, dim: int, rule: str) -> None:
        super().__init__(dim, rule)
        # closer must mean more similar from the first step: α starts negative (Koch et al. initialise at random)
        self.l1_weight = nn.Parameter(torch.full((dim,), -0.1))
        self.l1_bias = nn.Parameter(torch.zeros(()))

    def from_means(self, means: torch.Tensor) -> Params:
        return {"head.weight": means, "head.bias": means.new_zeros(means.shape[0])}

    def similarity(self, p: Params, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid similarity of every row of a (M, D) with every row of b (N, D) → (M, N)."""
        return (a[:, None, :] - b[None, :, :]).abs() @ p["l1_weight"] + p["l1_bias"]

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        return self.similarity(p, feats, fast["head.weight"]) + fast["head.bias"]


class RegressionTaskHead(TaskHead):
    """No head: the body's output is the prediction, scored by mean squared error (MAML's sine waves)."""

    kind = "none"
    regression = True
    rules = ("zero", "learned", "proto")

    def __init__(self, dim: int, rule: str) -> None:
        super().__init__(dim, "zero")

    def init(self, p: Params, feats: torch.Tensor, onehot: torch.Tensor) -> Params:
        return {}

    def init_from_labels(self, p: Params, feats: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
        return {}  # the labels are regression targets

    def logits(self, p: Params, fast: Params, feats: torch.Tensor) -> torch.Tensor:
        return feats

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets)


TASK_HEADS: dict[str, type[TaskHead]] = {h.kind: h for h in (LinearTaskHead, CosineTaskHead, PrototypeTaskHead,
                                                            SiameseTaskHead, RegressionTaskHead)}


def build_task_head(kind: str, dim: int, rule: str) -> TaskHead:
    if kind not in TASK_HEADS:
        raise ConfigError(f"unknown head {kind!r}; choose from {', '.join(TASK_HEADS)}")
    return TASK_HEADS[kind](dim, rule)
