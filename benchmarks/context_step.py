"""The cost on a device of adapting CAML's context vector, beside the head-only step, measured in one run.

Per N-way K-shot support set (M = N·K images), with one onnxruntime intra-op thread (`Bundle.load` defaults):

- ours: one `context_step.onnx` run (one SGD step of φ: forward of the blocks after the FiLM, the head
  initialised from their features, and the gradient back through them, on the support set's hidden activations);
  and a whole context adaptation: `embed_prefix` of the support set, `context.steps` context steps, `embed_suffix`;
- baseline: one `adapt_step.onnx` run (one SGD step of the head on the support features, what every other bundle
  runs), and the head-only start: `embed` of the support set.

Ratios are ours / baseline (> 1: the context costs more). Times are medians over `--repeats` runs after one
warm-up. Without `--bundle`, the bundle is exported from a CAML Conv-4 (28×28, width 64) trained for one
iteration on synthetic data: timing does not depend on the weights.

Run:  .venv/bin/python benchmarks/context_step.py [--bundle CTX.mtlb] [--repeats 7] [--json] [--quick]
(`--quick`: 5-way 1-shot only, 2 repeats — the CI smoke run.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHAPES = [(5, 1), (5, 5), (20, 1)]


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: session arenas, first-run allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def default_bundle(workdir: Path) -> Path:
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train

    run = workdir / "caml"
    meta_train(MetaTrainConfig(out=str(run), algorithm="caml", data="synthetic:20", image_size=28, ways=5, shots=1,
                               queries=1, meta_batch=1, inner_steps=2, iterations=1, val_every=1, val_episodes=2,
                               device="cpu", calibrate_episodes=0))
    return Path(export_bundle(run, workdir / "ctx.mtlb", single_file=True).path)


def row(bundle: object, ways: int, shots: int, rng: np.random.Generator, repeats: int) -> dict:
    """One N-way K-shot support set: both sides' times and their ratios."""
    from mtl.device_runtime.adapter import adapt_context, step_sizes

    spec, ctx, m = bundle.input_spec, bundle.context, ways * shots
    images = rng.standard_normal((m, spec.channels, spec.size, spec.size)).astype(np.float32)
    labels = np.repeat(np.arange(ways), shots).astype(np.int64)
    hidden, features = bundle.embed_prefix(images), bundle.embed(images)
    weight, bias = bundle.init_head(features, labels, ways)
    lr_w, lr_b = step_sizes(bundle, bundle.manifest.lr)
    phi = np.zeros(ctx.dim, np.float32)
    ours_step = median_s(lambda: bundle.context_step(hidden, labels, ways, phi, ctx.lr), repeats)
    base_step = median_s(lambda: bundle.adapt_step(weight, bias, features, labels, lr_w, lr_b), repeats)
    ours_all = median_s(lambda: adapt_context(bundle, images, labels, ways, ctx.steps), repeats)
    base_all = median_s(lambda: bundle.embed(images), repeats)
    return {"ways": ways, "shots": shots, "support": m,
            "ours": {"context_step_ms": 1e3 * ours_step, "context_adaptation_ms": 1e3 * ours_all},
            "baseline": {"head_step_ms": 1e3 * base_step, "embed_support_ms": 1e3 * base_all},
            "ratio": {"step": ours_step / base_step, "adaptation_vs_embed": ours_all / base_all}}


def measure(bundle_path: Path, shapes: list[tuple[int, int]], repeats: int) -> dict:
    from mtl.device_runtime import Bundle

    bundle = Bundle.load(bundle_path)
    if bundle.context is None:
        raise SystemExit(f"error: {bundle_path} has no context section (export a CAML checkpoint without --adapt)")
    rng = np.random.default_rng(0)
    rows = [row(bundle, ways, shots, rng, repeats) for ways, shots in shapes]
    return {"bundle": str(bundle_path), "context": bundle.context.to_dict(), "feature_dim": bundle.feature_dim,
            "threads": 1, "repeats": repeats, "results": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle with a context section (default: exported here)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="5-way 1-shot only, 2 repeats")
    args = parser.parse_args(argv)
    shapes, repeats = ([(5, 1)], 2) if args.quick else (SHAPES, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle if args.bundle is not None else default_bundle(Path(tmp))
        report = measure(bundle, shapes, repeats)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in report["results"]:
            print(f"{r['ways']}-way {r['shots']}-shot: context step {r['ours']['context_step_ms']:.2f} ms vs head "
                  f"step {r['baseline']['head_step_ms']:.2f} ms (×{r['ratio']['step']:.1f}); context adaptation "
                  f"{r['ours']['context_adaptation_ms']:.1f} ms vs embed {r['baseline']['embed_support_ms']:.1f} ms")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
