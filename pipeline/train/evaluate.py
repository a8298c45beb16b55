"""THE evaluation engine: mean ± 95% CI over a fixed set of seeded episodes on held-out classes.

One episode source (`draw_episodes`: seeded on the CPU, so the same seed gives the same episodes on any
machine and for any method), one held-out rule (`held_out`), and one pass (`evaluate`) that records each
episode's score after every adaptation step asked for — which gives both the result and the `--plot` curve.
What adapts is a backend (`pipeline.train.eval_backends`): a torch learner (a meta-trained model, or a
pretrained extractor as its device learner), the fine-tuning baseline, or a bundle through the device runtime.
`evaluate_path` is `mtl evaluate`: a checkpoint or a bundle, on its producer's test classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mtl.pipeline.data import ClassImages, InputSpec, load_data
from mtl.pipeline.data.sampler import EpisodeSampler, check_episode_shape
from mtl.pipeline.errors import ConfigError, DataError
from mtl.pipeline.train.common import StepCallback, mean_ci95, no_progress

# auto: what the model implies (its adaptation as trained, or as its bundle does); prototype: nearest class mean;
# finetune: a fresh linear head trained on the support features (the transfer baseline); adapt: the inner loop
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
    attack_epsilon: float = 0.0  # > 0: FGSM queries against each adapted model, this step in input units
    context_steps: int | None = None  # a bundle with a context: its steps (default: the manifest's)
    augment: int = 0  # a bundle: seeded affine variants per support image (device_runtime.augment)

    def __post_init__(self) -> None:
        check_episode_shape(self.ways, self.shots, self.queries)
        if self.episodes < 1:
            raise ConfigError(f"episodes must be at least 1, got {self.episodes}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown evaluation method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.finetune_steps < 1 or not 0 < self.finetune_lr < math.inf:
            raise ConfigError("finetune steps must be ≥ 1 and finetune lr > 0")
        if not 0 <= self.attack_epsilon < math.inf:
            raise ConfigError(f"--attack-epsilon must be ≥ 0 and finite, got {self.attack_epsilon}")
        if not 0 <= self.augment <= 64:
            raise ConfigError(f"--augment must be from 0 to 64, got {self.augment}")
        if self.context_steps is not None and not 0 <= self.context_steps <= 1000:
            raise ConfigError(f"--context-steps must be from 0 to 1000, got {self.context_steps}")


@dataclass(frozen=True)
class EvalResult:
    """`mean` ± `ci95` of `metric` ("accuracy", or "mse" for regression) over `episodes` episodes."""

    mean: float
    ci95: float
    episodes: int
    ways: int
    shots: int
    queries: int
    method: str
    metric: str = "accuracy"
    # the score of every episode, in episode order: what paired comparisons of two methods on the same
    # episodes need (the mean alone cannot tell a systematic difference from episode noise)
    per_episode: tuple[float, ...] = field(default=(), repr=False, compare=False)
    ece: float | None = None  # expected calibration error of the top-1 probability (15 bins), when measured
    reliability: tuple[dict[str, float], ...] = field(default=(), repr=False, compare=False)  # its bins

    @classmethod
    def of_episodes(cls, scores: torch.Tensor | Sequence[float], cfg: EvalConfig, method: str,
                    metric: str = "accuracy", ways: int | None = None) -> EvalResult:
        """Mean ± 95% CI of per-episode `scores` (E,), keeping the scores themselves."""
        scores = torch.as_tensor(scores, dtype=torch.float64).flatten().cpu()
        mean, ci95 = mean_ci95(scores)
        return cls(mean, ci95, int(scores.numel()), cfg.ways if ways is None else ways, cfg.shots, cfg.queries,
                   method, metric, tuple(scores.tolist()))

    def to_dict(self) -> dict:
        """JSON-ready: the mean under the metric's name, `per_episode` as a list, `ece` when measured."""
        data = asdict(self)
        data["per_episode"] = list(self.per_episode)
        data[self.metric] = data.pop("mean")
        data.pop("reliability")
        if data["ece"] is None:
            data.pop("ece")
        return data


@dataclass(frozen=True)
class Evaluation:
    """`results[k]`: after `steps[k]` adaptation steps (the last is the reported result), on `classes` of `data`."""

    results: list[EvalResult]
    steps: list[int]
    data: str
    classes: str
    source: str  # the checkpoint file or the bundle

    @property
    def result(self) -> EvalResult:
        return self.results[-1]


@dataclass(frozen=True)
class EpisodeSet:
    """Seeded episodes over `data`: support rows (E, N·K) and query rows (E, N·Q), class-major."""

    data: ClassImages
    support: torch.Tensor
    query: torch.Tensor
    cfg: EvalConfig

    def used(self) -> torch.Tensor:
        """The rows any episode uses (each embedded once by a backend whose features are per image)."""
        return torch.unique(torch.cat([self.support.flatten(), self.query.flatten()]))

    def chunks(self, size: int) -> Iterator[slice]:
        for start in range(0, self.support.shape[0], size):
            yield slice(start, min(self.support.shape[0], start + size))


def draw_episodes(data: ClassImages, cfg: EvalConfig) -> EpisodeSet:
    """THE episode source: `cfg.episodes` episodes drawn on the CPU from `cfg.seed`."""
    cpu = data.to("cpu") if data.images.device.type != "cpu" else data
    sampler = EpisodeSampler(cpu, cfg.ways, cfg.shots, cfg.queries, meta_batch=cfg.episodes, seed=cfg.seed)
    _, support, query = sampler.sample_indices()
    return EpisodeSet(cpu, support, query, cfg)


@dataclass(frozen=True)
class EpisodeScores:
    """What a backend measured: per-episode accuracy (E, S) after each step asked for, and the top-1 probability
    and correctness of every query after the last step (E·Q,), for calibration."""

    accuracy: torch.Tensor
    confidence: torch.Tensor
    correct: torch.Tensor
    logits: torch.Tensor | None = None  # (E·Q, N) after the last step, where the backend has them (calibration)
    step_logits: torch.Tensor | None = None  # (E·Q, S, N) after each step asked for, when the backend keeps them

    @classmethod
    def cat(cls, parts: Sequence[EpisodeScores]) -> EpisodeScores:
        fields = ["accuracy", "confidence", "correct"]
        fields += [f for f in ("logits", "step_logits") if all(getattr(p, f) is not None for p in parts)]
        return cls(**{f: torch.cat([getattr(p, f) for p in parts]) for f in fields})


class Backend(Protocol):
    """What adapts: `scores(episodes, steps, on_step)` → `EpisodeScores` after each of `steps` (sorted)
    adaptation steps; `method` names it in results."""

    method: str

    def scores(self, episodes: EpisodeSet, steps: list[int], on_step: StepCallback) -> EpisodeScores: ...


ECE_BINS = 15


def calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error of top-1 probabilities (Guo et al. 2017): Σ_b n_b/N · |accuracy_b − confidence_b|
    over `bins` equal-width confidence bins, and the bins themselves (the reliability diagram)."""
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # bin b holds (edges[b], edges[b+1]]
    counts = torch.bincount(index, minlength=bins).double()
    acc = torch.bincount(index, weights=correct, minlength=bins) / counts.clamp(min=1)
    conf = torch.bincount(index, weights=confidence, minlength=bins) / counts.clamp(min=1)
    ece = float((counts / counts.sum() * (acc - conf).abs()).sum()) if counts.sum() else float("nan")
    return {"ece": ece, "bins": [{"confidence": float(c), "accuracy": float(a), "count": int(n)}
                                 for c, a, n in zip(conf, acc, counts, strict=True)]}


def evaluate(backend: Backend, data: ClassImages, cfg: EvalConfig, steps: int, *, curve: bool = False,
             on_step: StepCallback = no_progress) -> list[EvalResult]:
    """The one pass: results after 0, 1, …, `steps` steps (`curve`) or after `steps` only, same episodes."""
    wanted = list(range(steps + 1)) if curve else [steps]
    scores = backend.scores(draw_episodes(data, cfg), wanted, on_step)
    results = [EvalResult.of_episodes(scores.accuracy[:, k], cfg, backend.method) for k in range(len(wanted))]
    calibrated = calibration(scores.confidence, scores.correct)
    results[-1] = dataclasses.replace(results[-1], ece=calibrated["ece"], reliability=tuple(calibrated["bins"]))
    return results


def held_out(data_spec: str, splits: dict[str, list[str]], input_spec: InputSpec | None) -> tuple[ClassImages, str]:
    """THE held-out rule, for checkpoints and bundles alike: the producer's test classes from `data_spec` when
    they are all there; every class of a dataset that shares none with the producer's split; a partial overlap
    is refused (a number measured on it would mix classes the model trained on)."""
    data = load_data(data_spec, image_size=None if input_spec is None else input_spec.size)
    if input_spec is not None:
        if (data.spec.channels, data.spec.size) != (input_spec.channels, input_spec.size):
            raise DataError(f"{data_spec} gives {data.spec.channels}×{data.spec.size}² images but the model was "
                            f"trained on {input_spec.channels}×{input_spec.size}²")
        data = dataclasses.replace(data, spec=input_spec)
    index = {name: i for i, name in enumerate(data.class_names)}
    test = list(splits.get("test", []))
    if test and all(name in index for name in test):
        return data.subset([index[n] for n in test]), f"test split ({len(test)} classes)"
    known = set(test) | set(splits.get("train", [])) | set(splits.get("val", []))
    if known.isdisjoint(index):
        return data, f"all {data.num_classes} classes (none seen in training)"
    missing = next((n for n in test if n not in index), None)
    what = f"lacks its test class {missing!r}" if missing else "does not say which classes were held out"
    raise DataError(f"{data_spec} shares classes with the model's training data but {what}")


def evaluate_path(path: str | Path, data_spec: str | None, cfg: EvalConfig, device: str = "auto",
                  steps: int | None = None, curve: bool = False, on_step: StepCallback = no_progress) -> Evaluation:
    """`mtl evaluate PATH`: a checkpoint (or run directory) or a bundle, on its producer's held-out classes.
    `steps`: adaptation steps (default: as trained, or the bundle's); `curve`: every step count from 0."""
    from mtl.pipeline.train.eval_backends import backend_for, regression_scores

    backend, producer, default_steps = backend_for(path, cfg, device)
    steps = default_steps if steps is None else steps
    if producer["regression"]:
        if curve:
            raise ConfigError(f"{path} is a sine-wave regression model; --plot draws classification accuracy")
        mse = regression_scores(producer["learner"], cfg, steps, producer["device"], seed=10_000 + cfg.seed)
        return Evaluation([EvalResult.of_episodes(mse, cfg, "adapt", metric="mse", ways=1)], [steps], "sinusoid",
                          "fresh sine-wave tasks", producer["source"])
    if curve and backend.method not in ("adapt", "bundle"):
        what = "a prototype model (ProtoNet)" if cfg.method == "auto" else f"--method {cfg.method}"
        raise ConfigError(f"--plot draws accuracy against adaptation steps, and {what} takes none; use --method "
                          "adapt (or auto) on a model that adapts")
    spec = data_spec or producer["data"]
    if not spec:
        raise DataError(f"{path} does not say which data it was trained on; pass --data")
    data, which = held_out(spec, producer["splits"], producer["input"])
    results = evaluate(backend, data, cfg, steps, curve=curve, on_step=on_step)
    return Evaluation(results, list(range(steps + 1)) if curve else [steps], spec, which, producer["source"])


def evaluation_dict(evaluation: Evaluation) -> dict[str, Any]:
    """`mtl evaluate --json`: the result, what it was measured on, and with a curve every step's point."""
    out = {**evaluation.result.to_dict(), "steps": evaluation.steps[-1], "data": evaluation.data,
           "classes": evaluation.classes, "checkpoint": evaluation.source}
    if len(evaluation.results) > 1:
        out["curve"] = [{"steps": k, "accuracy": r.mean, "ci95": r.ci95, "gain": gain, "gain_ci95": gain_ci}
                        for k, r, (gain, gain_ci) in zip(evaluation.steps, evaluation.results, gains(evaluation),
                                                         strict=True)]
    return out


def gains(evaluation: Evaluation) -> list[tuple[float, float]]:
    """Per step count of a curve: what the steps added over step 0 on the same episodes — the mean of the paired
    per-episode differences and its 95% CI, far tighter than either point's own CI."""
    first = torch.tensor(evaluation.results[0].per_episode, dtype=torch.float64)
    return [mean_ci95(torch.tensor(r.per_episode, dtype=torch.float64) - first) for r in evaluation.results]
