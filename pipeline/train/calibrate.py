"""Device settings chosen on the VALIDATION classes: how many SGD steps the head takes on a device, at what step
size, and the temperature its probabilities are read at.

- Steps and step size: every (steps, lr) of `STEP_GRID` × `LR_GRID` is scored on the same seeded validation
  episodes of `CELLS` (one evaluation pass per lr gives the whole curve over steps). Of the pairs whose mean
  accuracy is within `TIE` of the best, the one with the lowest log-loss (mean negative log-likelihood of the
  queries at that pair's own fitted temperature) wins, fewer steps on a tie within `LOG_LOSS_TIE`. Accuracy alone
  cannot choose: validation episodes across alphabets sit at 98–99 %, where 200 episodes do not resolve the
  0.1–0.4 points that steps buy on within-alphabet test episodes, while the log-loss, a proper score of every
  query's confidence, does (README's recipe: it picks 5 steps that add those points on the test alphabet).
  A learner whose step sizes are learned (Meta-SGD) or whose whole update rule is (the meta-LSTM),
  whose inner loop adapts its body (MAML: its steps are part of what it learned), or whose head takes no steps
  keeps what it trained with.
- Temperature (post-hoc temperature scaling, Guo et al. 2017): the law T(N, K) = exp(a + b·log N + c·log K)
  (`device_runtime.calibration`: a head adapted on more examples is surer, so one scalar cannot fit every task)
  minimising the negative log-likelihood of softmax(T · logits) of those validation queries after the chosen
  steps. It rescales confidences only; no prediction and no step changes.

- Open set (`mtl predict --reject auto`): the background, the unit class means of (at most `BACKGROUND_CLASSES`)
  TRAINING classes, each of at most `BACKGROUND_IMAGES` seeded images; then for K = 1 and 5 shots the score
  (`device_runtime.open_set`: similarity to the nearest class prototype minus that to the nearest background
  classes) below which at most `KNOWN_LOSS` of the validation queries of KNOWN classes fall, with 97.5 %
  confidence over the episodes (`_at_most`) — the threshold that loses no more than that share of known images.
  Only known classes are needed to set it; the bundle ships both (`open_set`, `init.npz`), and the device
  interpolates the threshold in log K. Not for extractors with batch statistics.

The result is `ckpt.meta["device"]`, which `load_learner` applies — so `mtl evaluate CKPT` and the exported
bundle both adapt and report with it. The test classes are never looked at.
"""

from __future__ import annotations

import dataclasses
import math
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtl.device_runtime.calibration import Temperature
from mtl.device_runtime.schema import BACKGROUND
from mtl.pipeline.data import ClassImages, Splits, load_data
from mtl.pipeline.errors import DataError
from mtl.pipeline.meta.learner import MetaLearner
from mtl.pipeline.train.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path, save_checkpoint
from mtl.pipeline.train.common import StepCallback, no_progress, resolve_device
from mtl.pipeline.train.eval_backends import TorchBackend
from mtl.pipeline.train.evaluate import EpisodeScores, EvalConfig, draw_episodes
from mtl.pipeline.train.learners import load_learner

STEP_GRID = (0, 5, 10, 20, 40)
LR_GRID = (0.1, 0.3, 1.0)
CELLS = ((5, 1), (5, 5), (20, 1), (20, 5))  # (ways, shots); ways capped at the validation classes
TIE = 0.001  # accuracies this close to the best count as the best
LOG_LOSS_TIE = 0.002  # relative: log-losses this close count as equal, and the fewer steps win
QUERIES = 15
KNOWN_LOSS = 0.05  # the open-set threshold loses at most this share of the validation knowns (`_at_most`)
OPEN_SET_SHOTS = (1, 5)
OPEN_SET_WAYS = 5
BACKGROUND_CLASSES = 1024  # training classes in the open-set background at most (schema.MAX_BACKGROUND caps it)
BACKGROUND_IMAGES = 20  # images per background class at most


@dataclass(frozen=True)
class Calibration:
    steps: int
    lr: float
    temperature: Temperature
    val_accuracy: float  # mean over the cells at the chosen steps and lr
    ece_before: float
    ece_after: float
    searched: bool  # False: steps and lr kept as trained; only the temperature was fitted
    table: dict[str, dict[int, float]]  # lr → steps → mean validation accuracy (when searched)
    log_loss: dict[str, dict[int, float]] = dataclasses.field(default_factory=dict)  # lr → steps → calibrated NLL

    def device(self) -> dict[str, Any]:
        """What `ckpt.meta["device"]` records."""
        return {"steps": self.steps, "lr": self.lr, "temperature": self.temperature.to_dict(),
                "val_accuracy": self.val_accuracy, "ece_before": self.ece_before, "ece_after": self.ece_after}


def calibrate_checkpoint(path: str | Path, episodes: int = 200, seed: int = 0, device: str = "auto",
                         on_step: StepCallback = no_progress) -> tuple[Path, Calibration]:
    """Choose the device settings of the checkpoint at `path` (a file or run directory) on its validation
    classes and write them into it, atomically. Returns the file and what was chosen."""
    file = resolve_checkpoint_path(path)
    ckpt = load_checkpoint(file)
    meta = {k: v for k, v in ckpt.meta.items() if k != "device"}  # calibrate what was trained, not a calibration
    loaded = load_learner(dataclasses.replace(ckpt, meta=meta))
    if loaded.learner.head.regression:
        raise DataError(f"{file} is a regression model: there are no class probabilities to calibrate")
    classes = producer_classes(ckpt, ("train", "val"))
    val = validation_classes(ckpt, classes)
    result = calibrate(loaded.learner, loaded.steps, val, episodes, seed, resolve_device(device), on_step)
    settings, shipped = result.device(), {}
    open_set = open_set_thresholds(loaded.learner, val, episodes, seed, classes["train"])
    if open_set is not None:
        settings["open_set"], background = open_set
        if background is not None:
            shipped[BACKGROUND] = torch.from_numpy(background)
    save_checkpoint(file, dataclasses.replace(ckpt, meta={**meta, "device": settings}, device=shipped))
    return file, result


def open_set_thresholds(learner: MetaLearner, val: ClassImages, episodes: int, seed: int,
                        train: ClassImages | None = None) -> tuple[dict[str, Any], np.ndarray | None] | None:
    """The open-set section and background: the unit class means (C, D) float32 of `train`'s classes (None
    without training classes), and per shot count K the threshold that loses at most `KNOWN_LOSS` of the
    validation queries' scores against them (`_at_most`), over `episodes` seeded episodes of `OPEN_SET_WAYS`
    classes (None: the extractor normalises with batch statistics or adapts inside, so one image's features depend
    on the others)."""
    from mtl.device_runtime import open_set
    from mtl.pipeline.models.scale_shift import fold_scale_shift
    from mtl.pipeline.train.common import embed
    from mtl.pipeline.train.eval_backends import has_batch_statistics

    if has_batch_statistics(learner.body) or learner.context_size:
        return None
    body = fold_scale_shift(learner.body) if learner.spec.scale_shift else learner.body
    device = next(learner.parameters()).device
    with torch.no_grad():
        features = embed(body, val.images, val.spec, device).cpu().numpy()
    ways, rng, thresholds, quantiles = min(OPEN_SET_WAYS, val.num_classes), np.random.default_rng(seed), {}, {}
    background = None
    if train is not None and train.num_classes:  # its own generator: the episodes do not depend on it
        pick = np.random.default_rng([seed, 1])
        classes = np.sort(pick.permutation(train.num_classes)[:BACKGROUND_CLASSES])
        rows = [int(train.offsets[c]) + np.sort(pick.permutation(int(train.counts[c]))[:BACKGROUND_IMAGES])
                for c in classes]
        with torch.no_grad():
            train_features = embed(body, train.images[torch.from_numpy(np.concatenate(rows))], train.spec,
                                   device).cpu().numpy()
        groups = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        background = open_set.prototypes(train_features, groups, len(rows)).astype(np.float32)
    for shots in OPEN_SET_SHOTS:
        if int(val.counts.min()) < shots + 1:
            continue
        known = []
        for _ in range(episodes):
            classes = rng.choice(val.num_classes, ways, replace=False)
            support, queries = [], []
            for c in classes:
                rows = int(val.offsets[c]) + rng.permutation(int(val.counts[c]))
                support.append(rows[:shots])
                queries.append(rows[shots:shots + QUERIES])
            labels = np.repeat(np.arange(ways), shots)
            protos = open_set.prototypes(features[np.concatenate(support)], labels, ways)
            known.append(open_set.scores(features[np.concatenate(queries)], protos, background))
        quantiles[str(shots)], thresholds[str(shots)] = _at_most(known, KNOWN_LOSS)
    if not thresholds:
        return None
    section = {"known_loss": KNOWN_LOSS, "ways": ways, "episodes": episodes, "thresholds": thresholds,
               "quantiles": quantiles}
    if background is not None:
        section["background"] = len(background)
    return section, background


def _at_most(known: list[np.ndarray], loss: float) -> tuple[float, float]:
    """(q, the q-quantile of the episodes' known scores) such that the share of knowns below it is at most `loss`
    with 97.5 % confidence: q = loss − 1.96 · the standard error of the per-episode share at the `loss`-quantile
    (episodes vary, and a threshold set at `loss` itself would lose more than `loss` on half of all draws)."""
    scores = np.concatenate(known)
    at = np.quantile(scores, loss)
    shares = np.array([float((k < at).mean()) for k in known])
    margin = 1.96 * float(shares.std(ddof=1)) / math.sqrt(len(shares)) if len(shares) > 1 else 0.0
    q = max(loss - margin, loss / 2)
    return q, float(np.quantile(scores, q))


def producer_classes(ckpt: Checkpoint, parts: tuple[str, ...] = ("val",)) -> dict[str, ClassImages]:
    """The producer's classes of each split part, from the data it was trained on (loaded once)."""
    from mtl.pipeline.data import InputSpec

    spec = InputSpec.from_dict(ckpt.meta["input"])
    data_spec = ckpt.meta["config"].get("data")
    if not data_spec:
        raise DataError(f"{ckpt.path} does not say which data it was trained on")
    data = dataclasses.replace(load_data(data_spec, image_size=spec.size), spec=spec)
    splits = Splits.from_dict(ckpt.meta["splits"])
    return {part: data.subset(splits.indices(data, part)) for part in parts}


def validation_classes(ckpt: Checkpoint, classes: dict[str, ClassImages] | None = None) -> ClassImages:
    """The producer's validation classes (of `classes` when given), from the data it was trained on."""
    val = (classes or producer_classes(ckpt))["val"]
    if val.num_classes < 2:
        raise DataError(f"{ckpt.path} has {val.num_classes} validation class(es); calibration needs at least 2")
    return val


def calibrate(learner: MetaLearner, trained_steps: int, val: ClassImages, episodes: int, seed: int,
              device: torch.device, on_step: StepCallback = no_progress) -> Calibration:
    cells = [EvalConfig(min(ways, val.num_classes), shots, QUERIES, episodes, seed=seed + i)
             for i, (ways, shots) in enumerate(CELLS) if int(val.counts.min()) >= shots + QUERIES]
    if not cells:
        raise DataError(f"the validation classes have {int(val.counts.min())} images each; calibration needs "
                        f"at least {1 + QUERIES}")
    sets = [draw_episodes(val, cfg) for cfg in cells]
    searched = not (learner.spec.learn_lr or learner.adapts_body or not learner.head.adapts or learner.state_size)
    table: dict[str, dict[int, float]] = {}
    log_loss: dict[str, dict[int, float]] = {}
    if searched:
        candidates = []  # (accuracy, log-loss, steps, lr)
        by_lr = {}
        for lr in LR_GRID:
            backend = TorchBackend(_with_lr(learner, lr), device, keep_step_logits=True)
            scored = by_lr[lr] = [backend.scores(s, list(STEP_GRID), on_step) for s in sets]
            for j, k in enumerate(STEP_GRID):
                groups = [(s.step_logits[:, j], _query_labels(c, len(s.accuracy)), c.ways, c.shots)
                          for c, s in zip(cells, scored, strict=True)]
                accuracy = float(torch.stack([s.accuracy[:, j].mean() for s in scored]).mean())
                candidates.append((accuracy, _log_loss(groups, fit_temperature(groups)), k, lr))
                table.setdefault(str(lr), {})[k] = accuracy
                log_loss.setdefault(str(lr), {})[k] = candidates[-1][1]
        steps, lr = choose(candidates)
        j = STEP_GRID.index(steps)  # the search scored the chosen pair already
        scored = [_at_step(s, j, _query_labels(c, len(s.accuracy))) for c, s in zip(cells, by_lr[lr], strict=True)]
    else:
        steps, lr = trained_steps if learner.head.adapts else 0, float(learner.spec.inner_lr)
        scored = [TorchBackend(learner, device).scores(s, [steps], on_step) for s in sets]
    accuracy = float(torch.stack([s.accuracy[:, -1].mean() for s in scored]).mean())
    temperature = fit_temperature([(s.logits, _query_labels(c, len(s.accuracy)), c.ways, c.shots)
                                   for c, s in zip(cells, scored, strict=True)])
    before = _ece(scored, cells, Temperature())
    after = _ece(scored, cells, temperature)
    return Calibration(steps, lr, temperature, accuracy, before, after, searched, table, log_loss)


def choose(candidates: list[tuple[float, float, int, float]]) -> tuple[int, float]:
    """(accuracy, log-loss, steps, lr) candidates → the (steps, lr) of the lowest log-loss among those within `TIE`
    of the best accuracy, fewer steps (then the lower log-loss) among log-losses within `LOG_LOSS_TIE` of it."""
    best_accuracy = max(c[0] for c in candidates)
    eligible = [c for c in candidates if c[0] >= best_accuracy - TIE]
    lowest = min(c[1] for c in eligible)
    _, _, steps, lr = min((c for c in eligible if c[1] <= lowest * (1 + LOG_LOSS_TIE)), key=lambda c: (c[2], c[1]))
    return steps, lr


def _log_loss(groups: list[tuple[torch.Tensor, torch.Tensor, int, int]], temperature: Temperature) -> float:
    """Mean over the groups (cells) of the queries' negative log-likelihood at the temperature law."""
    return float(sum(F.cross_entropy(temperature.at(n, k) * lg.double(), lb) for lg, lb, n, k in groups)
                 / len(groups))


def _at_step(scores: EpisodeScores, j: int, labels: torch.Tensor) -> EpisodeScores:
    """The scores after the j-th step count of a search pass, as if that count alone had been asked for."""
    logits = scores.step_logits[:, j]
    return EpisodeScores(scores.accuracy[:, j:j + 1], torch.softmax(logits, -1).max(-1).values,
                         logits.argmax(-1) == labels, logits)


def _with_lr(learner: MetaLearner, lr: float) -> MetaLearner:
    copy = deepcopy(learner)
    copy.spec = dataclasses.replace(learner.spec, inner_lr=lr)
    return copy


def _query_labels(cfg: EvalConfig, episodes: int) -> torch.Tensor:
    return torch.arange(cfg.ways).repeat_interleave(cfg.queries).repeat(episodes)


def fit_temperature(groups: list[tuple[torch.Tensor, torch.Tensor, int, int]]) -> Temperature:
    """The temperature law T(N, K) (`device_runtime.calibration`) minimising the mean cross-entropy of
    softmax(T(N, K) · logits) over every query of `groups` — (logits (Q, N), labels (Q,), N, K) per episode
    shape. A coefficient whose variable the groups do not vary (one N, or one K) stays 0."""
    ways, shots = sorted({g[2] for g in groups}), sorted({g[3] for g in groups})
    mask = torch.tensor([1.0, float(len(ways) > 1), float(len(shots) > 1)], dtype=torch.float64)
    data = [(lg.double(), lb, math.log(n), math.log(k)) for lg, lb, n, k in groups]
    total = sum(len(lb) for _, lb, _, _ in data)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        t = theta * mask
        loss = sum(F.cross_entropy(torch.exp(t[0] + t[1] * ln + t[2] * lk) * lg, lb, reduction="sum")
                   for lg, lb, ln, lk in data) / total
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    a, b, c = (float(v) for v in (theta * mask).detach())
    if not all(math.isfinite(v) for v in (a, b, c)):
        raise DataError("temperature fitting diverged on the validation episodes")
    return Temperature(a, b, c, (float(ways[0]), float(ways[-1])), (float(shots[0]), float(shots[-1])))


def _ece(scored: list, cells: list[EvalConfig], temperature: Temperature) -> float:
    """Mean over cells of the expected calibration error at `temperature`."""
    from mtl.pipeline.train.evaluate import calibration

    values = []
    for cfg, s in zip(cells, scored, strict=True):
        probs = torch.softmax(temperature.at(cfg.ways, cfg.shots) * s.logits.double(), -1)
        labels = _query_labels(cfg, len(s.accuracy))
        values.append(calibration(probs.max(-1).values, probs.argmax(-1) == labels)["ece"])
    return float(sum(values) / len(values))
