"""The device's numpy + Pillow preprocessing gives the same tensors as the torchvision pipeline."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

transforms = pytest.importorskip("torchvision.transforms", reason="the reference pipeline is torchvision's")

from mtl.device_runtime.preprocess import InputSpec, load_image, normalize  # noqa: E402
from tests.tolerance import assert_float_close  # noqa: E402

OMNIGLOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"


def real_pngs(count=12):
    if not OMNIGLOT.is_file():
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT}")
    with zipfile.ZipFile(OMNIGLOT) as zf:
        names = [n for n in zf.namelist() if n.endswith(".png")][::97][:count]
        return [zf.read(n) for n in names]


def test_omniglot_files_give_the_torchvision_tensors_bit_for_bit():
    spec = InputSpec(size=28, channels=1, mean=(0.0,), std=(1.0,), invert=True, resize="bilinear")
    pipeline = transforms.Compose([transforms.Grayscale(1),
                                   transforms.Resize((28, 28), interpolation=transforms.InterpolationMode.BILINEAR),
                                   transforms.PILToTensor()])
    for data in real_pngs():
        ours = load_image(data, spec)  # uint8 (1, 28, 28), strokes bright
        theirs = 255 - pipeline(Image.open(io.BytesIO(data)))
        assert np.array_equal(ours, theirs.numpy())
        normalised = normalize(ours[None], spec)[0]
        reference = transforms.Normalize(spec.mean, spec.std)(theirs.float() / 255.0)
        assert_float_close(normalised, reference, ulps=4)


def test_rgb_photos_give_the_torchvision_tensors(tmp_path):
    rng = np.random.default_rng(0)
    spec = InputSpec(size=32, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), invert=False,
                     resize="bicubic")
    pipeline = transforms.Compose([transforms.Resize((32, 32), interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (57, 45, 3), dtype=np.uint8)).save(path)
        ours = normalize(load_image(path, spec)[None], spec)[0]
        theirs = pipeline(Image.open(path).convert("RGB"))
        assert_float_close(ours, theirs, ulps=16)
