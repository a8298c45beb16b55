"""Write held-out classes of a run's data as image folders (for demos and device tests).

`python -m mtl.pipeline.data.dump RUN_DIR --out DIR [--ways N] [--shots K] [--queries Q]` writes
DIR/support/<class>/*.png (K images per class) and DIR/query/<class>/*.png (Q per class) for the
first N test classes of the run's split, in the source's own format (so a device's preprocessing,
e.g. Omniglot's inversion, gives back exactly the training tensors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mtl.pipeline.data import ClassImages, load_data
from mtl.pipeline.errors import DataError


def dump_classes(data: ClassImages, names: list[str], out: Path, shots: int, queries: int) -> None:
    index = {n: i for i, n in enumerate(data.class_names)}
    for name in names:
        images = data.class_images(index[name]).numpy()
        if len(images) < shots + queries:
            raise DataError(f"class {name!r} has {len(images)} images, fewer than {shots} + {queries}")
        safe = name.replace("/", "__")
        for part, chunk in (("support", images[:shots]), ("query", images[shots:shots + queries])):
            folder = out / part / safe
            folder.mkdir(parents=True, exist_ok=True)
            for j, image in enumerate(chunk):
                pixels = 255 - image if data.spec.invert else image  # back to the source's polarity
                mode = "L" if pixels.shape[0] == 1 else "RGB"
                array = pixels[0] if mode == "L" else np.transpose(pixels, (1, 2, 0))
                Image.fromarray(np.ascontiguousarray(array), mode).save(folder / f"{j:03d}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=5)
    args = parser.parse_args(argv)
    config = json.loads((args.run_dir / "config.json").read_text())
    splits = json.loads((args.run_dir / "splits.json").read_text())
    data = load_data(config["data"], image_size=config.get("image_size"))
    dump_classes(data, splits["test"][: args.ways], args.out, args.shots, args.queries)


if __name__ == "__main__":
    main()
