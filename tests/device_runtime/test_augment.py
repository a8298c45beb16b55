"""Support augmentation on the device (`--augment N`): numpy's warp is torch's affine_grid + grid_sample (the
training jitter), variants are seeded, and an augmented class carries its variants as examples."""

import math

import numpy as np
import pytest

from mtl.device_runtime import Adapter, Bundle
from mtl.device_runtime.augment import _warp, affine_variants
from mtl.device_runtime.errors import ConfigError
from tests.device_runtime.bundle_factory import glyph, write_bundle
from tests.tolerance import assert_float_close


@pytest.mark.parametrize("angle, zoom, shift", [(0.0, 1.0, (0.0, 0.0)), (8.0, 1.07, (0.1, -0.15)),
                                                (-10.0, 0.9, (-0.2, 0.05))])
def test_the_numpy_warp_is_torchs_grid_sample(angle, zoom, shift):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    image = np.random.default_rng(0).standard_normal((2, 13, 11)).astype(np.float32)
    a = math.radians(angle)
    theta = np.array([[math.cos(a) / zoom, -math.sin(a) / zoom, shift[0]],
                      [math.sin(a) / zoom, math.cos(a) / zoom, shift[1]]])
    grid = F.affine_grid(torch.tensor(theta[None], dtype=torch.float32), [1, 2, 13, 11], align_corners=False)
    want = F.grid_sample(torch.from_numpy(image[None]), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0]
    assert_float_close(_warp(image, theta), want.numpy(), dtype=np.float32, ulps=256)


def test_variants_are_seeded_small_and_refused_out_of_range():
    images = np.random.default_rng(1).standard_normal((3, 1, 16, 16)).astype(np.float32)
    first, again = affine_variants(images, 4, seed=7), affine_variants(images, 4, seed=7)
    assert first.shape == (12, 1, 16, 16) and np.array_equal(first, again)
    assert not np.array_equal(first, affine_variants(images, 4, seed=8))
    assert affine_variants(images, 0).shape == (0, 1, 16, 16)
    for bad in (-1, 65, 1.5, True):
        with pytest.raises(ConfigError, match="augment must be"):
            affine_variants(images, bad)


def test_an_augmented_class_carries_its_variants_and_adapts(tmp_path):
    adapter = Adapter(Bundle.load(write_bundle(tmp_path / "bundle")))
    rng = np.random.default_rng(0)
    for label in range(3):
        adapter.add_examples(f"c{label}", [glyph(label, rng) for _ in range(2)], augment=3)
    assert adapter.examples == {"c0": 8, "c1": 8, "c2": 8}  # 2 images + 2·3 variants each
    result = adapter.adapt()
    assert result.support == 24
    assert adapter.predict([glyph(1, rng)])[0] == ["c1"]


def test_mtl_adapt_augment_adds_the_variants_to_the_support_set(tmp_path):
    from typer.testing import CliRunner

    from mtl.cli.app import app
    from tests.device_runtime.bundle_factory import write_support

    bundle, support = write_bundle(tmp_path / "bundle"), write_support(tmp_path / "support", ["a", "b", "c"])
    result = CliRunner().invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "s"),
                                      "--augment", "2"])
    assert result.exit_code == 0, result.output
    assert "support: 27 images" in result.output  # 3 classes × 3 drawings × (1 + 2 variants)


def test_the_pillow_warp_at_full_resolution_is_the_same_jitter_as_the_numpy_warp():
    from PIL import Image

    from mtl.device_runtime.augment import pil_variants

    yy, xx = np.mgrid[0:40, 0:40]
    image = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)  # smooth: interpolation agrees
    pil = pil_variants(Image.fromarray(image), 3, np.random.default_rng(5))
    ref = affine_variants(image[None, None].astype(np.float32), 3, 5)
    for warped, want in zip(pil, ref, strict=True):
        inner = np.abs(np.asarray(warped, np.float32) - want[0])[8:-8, 8:-8]  # away from the fill vs edge border
        assert inner.max() <= 1.5  # uint8 rounding and Pillow's fixed-point bilinear weights


def test_variants_are_not_shots_for_the_temperature_and_survive_save_and_load(tmp_path):
    adapter = Adapter(Bundle.load(write_bundle(tmp_path / "bundle")))
    rng = np.random.default_rng(0)
    for label in range(3):
        adapter.add_examples(f"c{label}", [glyph(label, rng) for _ in range(2)], augment=3)
    result = adapter.adapt()
    assert (result.support, result.variants, result.shots) == (24, 18, 2.0)
    adapter.save(tmp_path / "s")
    again = Adapter.load(tmp_path / "s")
    assert again.variants == {"c0": 6, "c1": 6, "c2": 6} and again.result.shots == 2.0
    again.add_examples("c3", [glyph(3, rng)], augment=1)
    assert again.adapt().variants == 19
