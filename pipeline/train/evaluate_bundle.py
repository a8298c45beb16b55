"""`mtl evaluate BUNDLE`: the same episodes as `mtl evaluate CKPT`, run through the device runtime.

Images are embedded once by `embed.onnx` (a frozen extractor: per-image features), then each
episode initialises the head by the manifest's rule and runs `adapt_step.onnx` k times — exactly
what `device_runtime.Adapter` does on a device — and `predict.onnx` scores its queries. A bundle
that normalises with batch statistics embeds each episode's support set as one batch and its
queries as another, as the trainer did and as `Adapter` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from device_runtime import Bundle
from device_runtime.adapter import init_head, step_sizes
from pipeline.data import load_data
from pipeline.errors import DataError
from pipeline.train.common import StepCallback, mean_ci95, no_progress, normalize
from pipeline.train.evaluate import EvalConfig, EvalResult, draw_episodes


def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == ".mtlb" or (path.is_dir() and (path / "manifest.json").is_file())


def evaluate_bundle(path: str | Path, data_spec: str | None, cfg: EvalConfig, steps: int | None = None,
                    on_step: StepCallback = no_progress) -> tuple[EvalResult, str, str]:
    """Few-shot accuracy of a bundle on its producer's test classes (or all classes of `data_spec`)."""
    bundle = Bundle.load(path)
    producer = bundle.manifest["producer"]
    data_spec = data_spec or producer.get("data")
    if not data_spec:
        raise DataError(f"{path} does not say which data it was trained on; pass --data")
    data = load_data(data_spec, image_size=bundle.input_spec.size)
    index = {n: i for i, n in enumerate(data.class_names)}
    test = [n for n in producer.get("test_classes", []) if n in index]
    which = f"test split ({len(test)} classes)" if test else f"all {data.num_classes} classes"
    data = data.subset([index[n] for n in test]) if test else data
    support_index, query_index = draw_episodes(data, cfg)
    steps = bundle.manifest["adapt"]["steps"] if steps is None else steps
    lr = 1.0 if bundle.manifest["adapt"]["learned_lr"] else bundle.manifest["adapt"]["lr"]
    if bundle.batch_statistics:
        accuracies = []
        for i, (s, q) in enumerate(zip(support_index, query_index, strict=True)):
            support, query = (bundle.embed(normalize(data.images[x], bundle.input_spec).numpy()) for x in (s, q))
            accuracies.append(_episode(bundle, support, query, cfg, steps, lr))
            on_step("episodes", i + 1, cfg.episodes, {})
    else:
        used = torch.unique(torch.cat([support_index.flatten(), query_index.flatten()]))
        features = np.zeros((len(data), bundle.feature_dim), np.float32)
        features[used.numpy()] = bundle.embed(normalize(data.images[used], bundle.input_spec).numpy())
        accuracies = [_episode(bundle, features[s.numpy()], features[q.numpy()], cfg, steps, lr)
                      for s, q in zip(support_index, query_index, strict=True)]
        on_step("episodes", cfg.episodes, cfg.episodes, {})
    mean, ci95 = mean_ci95(torch.tensor(accuracies))
    return EvalResult(mean, ci95, cfg.episodes, cfg.ways, cfg.shots, cfg.queries, "bundle"), data_spec, which


def _episode(bundle: Bundle, feats: np.ndarray, query: np.ndarray, cfg: EvalConfig, steps: int, lr: float) -> float:
    """Accuracy on one episode from its support features (class-major) and query features."""
    labels = np.repeat(np.arange(cfg.ways), cfg.shots).astype(np.int64)
    weight, bias = init_head(bundle, feats, labels, cfg.ways)
    lr_weight, lr_bias = step_sizes(bundle, lr)
    for _ in range(steps):
        weight, bias, _ = bundle.adapt_step(weight, bias, feats, labels, lr_weight, lr_bias)
    probs = bundle.predict_proba(weight, bias, query)
    return float((probs.argmax(1) == np.repeat(np.arange(cfg.ways), cfg.queries)).mean())
