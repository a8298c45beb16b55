import numpy as np
import pytest

from tests.device_runtime.bundle_factory import glyph, read_manifest, write_bundle


@pytest.fixture
def bundle_dir(tmp_path):
    """A tiny real bundle directory (learned head init, fixed step size)."""
    return write_bundle(tmp_path / "bundle")


@pytest.fixture
def glyphs():
    """glyphs(label, count, seed) → list of uint8 (H, W) images of one separable synthetic class."""

    def make(label: int, count: int = 3, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed * 100 + label)
        return [glyph(label, rng) for _ in range(count)]

    return make


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid bundle directory and its manifest, shared by a module's property tests."""
    path = write_bundle(tmp_path_factory.mktemp("good") / "bundle")
    return path, read_manifest(path)
