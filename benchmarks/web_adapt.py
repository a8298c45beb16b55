"""Adapting in a web page (onnxruntime-web, wasm, in headless Chromium) beside the Python device runtime, measured
in one run on the same machine, bundle and support images.

Per N-way K-shot support set (PNG files decoded by each side: Pillow in Python, the browser's decoder on the page):

- ours: the page (device_runtime/web, `window.mtl.time`): decode, preprocess and embed the support set, initialise
  the head and run the bundle's adapt steps — with 1 wasm thread and with all of this machine's threads (the page
  is served cross-origin isolated, so onnxruntime-web may start worker threads);
- baseline: the Python runtime (`mtl.device_runtime.Adapter`: add_examples + adapt) with the same number of
  onnxruntime intra-op threads.

Ratios are ours / baseline (> 1: the page is slower). Times are medians over `--repeats` runs after one warm-up
(the page's repeats run in one page load, after its own warm-up). Also the bytes the page transferred to open and
adapt, its own files apart from the bundle and images. Without `--bundle`, a Conv-4 (28×28, width 64) pretrained for
one epoch on synthetic data is exported (timing does not depend on the weights); the support images are synthetic
105×105 strokes, resized by both sides like Omniglot's drawings.

Needs Node.js and Chromium (`make web` builds the page; Debian's chromium).
Run:  .venv/bin/python benchmarks/web_adapt.py [--bundle B.mtlb] [--repeats 5] [--json] [--quick]
(`--quick`: 5-way 1-shot only, 1 repeat — the CI smoke run.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from context_step import median_s  # a sibling file: the same median-after-warm-up timing

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project's packages importable
    sys.path.insert(0, str(REPO))
WEB = REPO / "device_runtime" / "web"
CELLS = [(5, 5), (20, 5)]


def default_bundle(workdir: Path) -> Path:
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.pretrain import PretrainConfig, pretrain

    run = workdir / "pretrain"
    pretrain(PretrainConfig(out=str(run), data="synthetic:40", backbone="conv4", epochs=1, val_episodes=4,
                            device="cpu", calibrate_episodes=0))
    return Path(export_bundle(run, workdir / "bundle.mtlb", single_file=True).path)


def strokes(files: Path, ways: int, shots: int, seed: int = 0) -> dict[str, list[Path]]:
    """`ways` classes of `shots` 105×105 black-on-white stroke drawings, as PNG files."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    classes = {}
    for c in range(ways):
        folder = files / f"{ways}w{shots}s" / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        points = rng.uniform(10, 95, (6, 2))
        classes[folder.name] = []
        for k in range(shots):
            image = Image.new("L", (105, 105), 255)
            jitter = points + rng.normal(0, 3, points.shape)
            ImageDraw.Draw(image).line([tuple(p) for p in jitter], fill=0, width=4)
            path = folder / f"{k}.png"
            image.convert("1").save(path)
            classes[folder.name].append(path)
    return classes


def python_s(bundle_path: Path, classes: dict[str, list[Path]], threads: int, repeats: int) -> float:
    from mtl.device_runtime import Bundle
    from mtl.device_runtime.adapter import Adapter

    bundle = Bundle.load(bundle_path, intra_op_num_threads=threads)

    def once() -> None:
        adapter = Adapter(bundle)
        for name, paths in classes.items():
            adapter.add_examples(name, paths)
        adapter.adapt()

    return median_s(once, repeats)


def page(jobs: list[dict], files: Path, workdir: Path) -> list[dict]:
    spec = workdir / "jobs.json"
    spec.write_text(json.dumps({"dist": str(WEB / "dist"), "files": str(files), "jobs": jobs}))
    run = subprocess.run(["node", str(WEB / "test" / "browser.mjs"), str(spec)], capture_output=True, text=True,
                         cwd=WEB, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"web_adapt: the page failed: {run.stderr.strip().splitlines()[-1:]}")
    results = json.loads(run.stdout)
    bad = [r["error"] for r in results if "error" in r]
    if bad:
        raise SystemExit(f"web_adapt: the page failed: {bad[0]}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a .mtlb (default: a synthetic Conv-4, exported)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the JSON only")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 5-way 1-shot, 1 repeat")
    args = parser.parse_args(argv)
    if shutil.which("node") is None or not (WEB / "dist" / "app.js").is_file():
        parser.error("needs Node.js and the built page: run `make web` first")
    cells = [(5, 1)] if args.quick else CELLS
    repeats = 1 if args.quick else args.repeats
    every = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = workdir / "files"
        files.mkdir()
        bundle = shutil.copy(args.bundle, files / "bundle.mtlb") if args.bundle else None
        if bundle is None:
            bundle = shutil.copy(default_bundle(workdir), files / "bundle.mtlb")
        bundle = Path(bundle)
        supports = {cell: strokes(files, *cell) for cell in cells}
        counts = sorted({1, every})
        jobs = [{"kind": "time", "bundle": "/files/bundle.mtlb", "threads": t, "repeats": repeats,
                 "classes": {n: ["/files/" + p.relative_to(files).as_posix() for p in ps]
                             for n, ps in supports[cell].items()}} for cell in cells for t in counts]
        timed = iter(page(jobs, files, workdir))
        rows, transferred = [], None
        for cell in cells:
            for t in counts:
                ours = next(timed)
                transferred = ours["bytes"]["page"]
                baseline = python_s(bundle, supports[cell], t, repeats)
                rows.append({"cell": f"{cell[0]}-way {cell[1]}-shot", "threads": t,
                             "page_s": round(ours["median_s"], 4), "python_s": round(baseline, 4),
                             "ratio": round(ours["median_s"] / baseline, 2)})
    report = {"benchmark": "web_adapt", "bundle": str(args.bundle or "synthetic Conv-4 (28×28)"),
              "machine": f"{every} CPU threads", "repeats": repeats, "cells": rows,
              "page_bytes": transferred, "note": "ratio = page / Python runtime; page_bytes: the page's own files "
              "(html, js, onnxruntime-web's wasm), not the bundle or images"}
    if not args.json:
        for r in rows:
            print(f"{r['cell']:>16}  {r['threads']} thread(s): page {1000 * r['page_s']:8.1f} ms   "
                  f"python {1000 * r['python_s']:8.1f} ms   ×{r['ratio']}")
        print(f"the page's own files: {transferred:,} bytes")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
