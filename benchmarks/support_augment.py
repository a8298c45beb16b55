"""The device cost of support augmentation (`mtl adapt --augment N`) per support image, beside no augmentation.

Per support image, through the torch-free runtime with one onnxruntime thread: `Adapter.add_examples` of a class
of real Omniglot drawings (decode → preprocess → embed), with `augment=N` (ours: N seeded affine variants warped
in numpy and embedded too) and with `augment=0` (baseline). Then the whole `adapt` of a 5-way set, both ways.
Times are medians over `--repeats` runs after one warm-up; ratio = ours / baseline.

Run:  .venv/bin/python benchmarks/support_augment.py BUNDLE [--augment 8] [--omniglot PATH] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

from context_step import median_s  # a sibling file: the same median-after-warm-up timing

REPO = Path(__file__).resolve().parents[1]


def drawings(omniglot: Path, classes: int, shots: int) -> dict[str, list[bytes]]:
    """`shots` PNG drawings (bytes) of each of the first `classes` characters of the first background archive."""
    archive = sorted(omniglot.glob("*.zip"))[0]
    by_class: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(archive) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".png")):
            key = str(Path(name).parent)
            if key in by_class or len(by_class) < classes:
                if len(by_class.setdefault(key, [])) < shots:
                    by_class[key].append(z.read(name))
    return by_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--augment", type=int, default=8)
    parser.add_argument("--omniglot", type=Path, default=REPO.parent / "shared" / "data" / "omniglot")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from mtl.device_runtime import Adapter, Bundle

    bundle = Bundle.load(args.bundle)
    support = drawings(args.omniglot, 5, 5)

    def add_all(n: int) -> Adapter:
        adapter = Adapter(bundle)
        for name, images in support.items():
            adapter.add_examples(name, images, augment=n)
        return adapter

    images = sum(len(v) for v in support.values())
    report = {"bundle": str(args.bundle), "augment": args.augment, "support_images": images, "threads": 1}
    for key, n in (("ours", args.augment), ("baseline", 0)):
        add = median_s(lambda n=n: add_all(n), args.repeats)
        adapter = add_all(n)
        adapt = median_s(adapter.adapt, args.repeats)
        report[key] = {"add_examples_ms_per_image": 1e3 * add / images, "adapt_ms": 1e3 * adapt}
    report["ratio"] = {k: report["ours"][k] / report["baseline"][k] for k in report["ours"]}
    ours, base, ratio = report["ours"], report["baseline"], report["ratio"]
    print(json.dumps(report, indent=2) if args.json else
          f"per support image: {ours['add_examples_ms_per_image']:.2f} ms with {args.augment} variants vs "
          f"{base['add_examples_ms_per_image']:.2f} ms without (×{ratio['add_examples_ms_per_image']:.1f}); "
          f"adapt {ours['adapt_ms']:.1f} vs {base['adapt_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
