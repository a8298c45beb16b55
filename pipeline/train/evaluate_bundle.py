"""`mtl evaluate BUNDLE`: the same episodes as `mtl evaluate CKPT`, run through the device runtime.

Images are embedded once by `embed.onnx` (a frozen extractor: per-image features), then each
episode initialises the head by the manifest's rule and runs `adapt_step.onnx` k times — exactly
what `device_runtime.Adapter` does on a device — and `predict.onnx` scores its queries. A bundle
that normalises with batch statistics embeds each episode's support set as one batch and its
queries as another, as the trainer did and as `Adapter` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mtl.device_runtime import Bundle
from mtl.device_runtime.adapter import init_head, step_sizes
from mtl.pipeline.data import ClassImages, load_data
from mtl.pipeline.errors import DataError
from mtl.pipeline.train.common import StepCallback, no_progress, normalize
from mtl.pipeline.train.evaluate import EvalConfig, EvalResult, draw_episodes


def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == ".mtlb" or (path.is_dir() and (path / "manifest.json").is_file())


def evaluate_bundle(path: str | Path, data_spec: str | None, cfg: EvalConfig, steps: int | None = None,
                    on_step: StepCallback = no_progress) -> tuple[EvalResult, str, str]:
    """Few-shot accuracy of a bundle on its producer's test classes (or all classes of `data_spec`)."""
    bundle, data, data_spec, which = _held_out(path, data_spec)
    steps = bundle.manifest["adapt"]["steps"] if steps is None else steps
    accuracies = [_score(bundle, deque(_trajectory(bundle, support, cfg, steps), maxlen=1)[0], query, cfg)
                  for support, query in _episode_features(bundle, data, cfg, on_step)]
    return EvalResult.of_episodes(accuracies, cfg, "bundle"), data_spec, which


def bundle_step_curve(path: str | Path, data_spec: str | None, cfg: EvalConfig, steps: int | None = None,
                      on_step: StepCallback = no_progress) -> tuple[list[EvalResult], str, str]:
    """Accuracy after 0, 1, …, `steps` device update steps on the episodes of `evaluate_bundle`, in one pass:
    each episode is adapted once and its queries scored after every step."""
    bundle, data, data_spec, which = _held_out(path, data_spec)
    steps = bundle.manifest["adapt"]["steps"] if steps is None else steps
    per_episode = [[_score(bundle, head, query, cfg) for head in _trajectory(bundle, support, cfg, steps)]
                   for support, query in _episode_features(bundle, data, cfg, on_step)]  # (E, S+1)
    per_step = torch.tensor(per_episode).T
    results = [EvalResult.of_episodes(row, cfg, "bundle") for row in per_step]
    return results, data_spec, which


def _held_out(path: str | Path, data_spec: str | None) -> tuple[Bundle, ClassImages, str, str]:
    """The verified bundle and its producer's test classes from `data_spec` (or all of a dataset it never saw)."""
    bundle = Bundle.load(path)
    producer = bundle.manifest["producer"]
    data_spec = data_spec or producer.get("data")
    if not data_spec:
        raise DataError(f"{path} does not say which data it was trained on; pass --data")
    data = load_data(data_spec, image_size=bundle.input_spec.size)
    index = {n: i for i, n in enumerate(data.class_names)}
    test = [n for n in producer.get("test_classes", []) if n in index]
    which = f"test split ({len(test)} classes)" if test else f"all {data.num_classes} classes"
    return bundle, (data.subset([index[n] for n in test]) if test else data), data_spec, which


def _episode_features(bundle: Bundle, data: ClassImages, cfg: EvalConfig,
                      on_step: StepCallback) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Support (N*K, D, class-major) and query (N*Q, D) features of each of `cfg`'s seeded episodes."""
    support_index, query_index = draw_episodes(data, cfg)
    if bundle.batch_statistics:
        for i, (s, q) in enumerate(zip(support_index, query_index, strict=True)):
            yield tuple(bundle.embed(normalize(data.images[x], bundle.input_spec).numpy()) for x in (s, q))
            on_step("episodes", i + 1, cfg.episodes, {})
        return
    used = torch.unique(torch.cat([support_index.flatten(), query_index.flatten()]))
    features = np.zeros((len(data), bundle.feature_dim), np.float32)
    features[used.numpy()] = bundle.embed(normalize(data.images[used], bundle.input_spec).numpy())
    for s, q in zip(support_index, query_index, strict=True):
        yield features[s.numpy()], features[q.numpy()]
    on_step("episodes", cfg.episodes, cfg.episodes, {})


def _trajectory(bundle: Bundle, feats: np.ndarray, cfg: EvalConfig,
                steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The head (W, b) after 0, 1, …, `steps` runs of adapt_step.onnx on one episode's support features,
    initialised and stepped as `device_runtime.Adapter.adapt` does (the bundle's default step size)."""
    lr = 1.0 if bundle.manifest["adapt"]["learned_lr"] else bundle.manifest["adapt"]["lr"]
    labels = np.repeat(np.arange(cfg.ways), cfg.shots).astype(np.int64)
    weight, bias = init_head(bundle, feats, labels, cfg.ways)
    lr_weight, lr_bias = step_sizes(bundle, lr)
    yield weight, bias
    for _ in range(steps):
        weight, bias, _ = bundle.adapt_step(weight, bias, feats, labels, lr_weight, lr_bias)
        yield weight, bias


def _score(bundle: Bundle, head: tuple[np.ndarray, np.ndarray], query: np.ndarray, cfg: EvalConfig) -> float:
    """Query accuracy of one adapted head; queries are class-major, `cfg.queries` per class."""
    probs = bundle.predict_proba(*head, query)
    return float((probs.argmax(1) == np.repeat(np.arange(cfg.ways), cfg.queries)).mean())
