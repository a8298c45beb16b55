"""The training jitter: random_affine's elastic distortion."""

import pytest
import torch

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.augment import ELASTIC_GRID, random_affine
from mtl.pipeline.train.pretrain import PretrainConfig
from tests.conftest import SMALL


def _ramp(b: int = 6, size: int = 28) -> torch.Tensor:
    """Each pixel holds its own x coordinate in grid units (pixel centres, −1 … 1 across the image)."""
    xs = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    return xs.expand(b, 1, size, size).clone()


def test_without_elastic_the_jitter_and_its_random_stream_are_unchanged():
    x = torch.rand(5, 1, 28, 28)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(random_affine(x, a, shear=0.3), random_affine(x, b, shear=0.3, elastic=0.0),
                               rtol=0, atol=0)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_elastic_moves_pixels_smoothly_by_at_most_its_amplitude_and_differently_per_image():
    size, amplitude = 28, 0.06
    x = _ramp(size=size)
    g = torch.Generator().manual_seed(0)
    out = random_affine(x, g, degrees=0, scale=0, translate=0, elastic=amplitude)
    inner = (slice(None), 0, slice(4, -4), slice(4, -4))  # away from the repeated border
    shift = (out - x)[inner]  # the x displacement, in grid units (the image spans 2)
    eps = torch.finfo(x.dtype).eps * 16
    assert shift.abs().max() <= 2 * amplitude * 1.25 + eps  # bicubic overshoots its control points by < 25 %
    assert shift.abs().max() > 0.3 * 2 * amplitude  # it does move them
    pixel, spacing = 2 / size, (size - 1) / (ELASTIC_GRID - 1)  # control points lie `spacing` pixels apart
    # smooth: neighbours differ by at most the swing between two control points spread over their spacing
    assert shift.diff(dim=-1).abs().max() <= 2 * (2 * amplitude * 1.25) / spacing + eps
    assert not torch.allclose(shift[0], shift[1], rtol=0, atol=0.1 * pixel)  # a field of its own per image


def test_an_elastic_amplitude_out_of_range_is_refused():
    for bad in (-0.1, 0.5, float("inf")):
        with pytest.raises(ConfigError, match="elastic"):
            PretrainConfig(**dict(SMALL, augment_elastic=bad))
