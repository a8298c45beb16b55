import time

import pytest
import torch

from mtl.pipeline.data import load_data
from mtl.pipeline.data.synthetic import load_synthetic, num_families
from mtl.pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def glyphs():
    return load_data("synthetic:40")


def test_default_is_200_classes_of_20_glyphs_built_in_seconds():
    start = time.perf_counter()
    data = load_data("synthetic")
    seconds = time.perf_counter() - start
    assert data.num_classes == 200 and set(data.counts.tolist()) == {20}
    assert data.image_shape == (1, 28, 28) and data.images.dtype == torch.uint8
    assert seconds < 15, f"generating 200 classes took {seconds:.1f} s"


def test_the_same_spec_gives_the_same_images_every_time(glyphs):
    again = load_data("synthetic:40")
    assert torch.equal(glyphs.images, again.images)
    assert glyphs.class_names == again.class_names and glyphs.superclasses == again.superclasses


def test_a_different_seed_gives_different_glyphs():
    assert not torch.equal(load_synthetic(3, seed=1).images, load_synthetic(3, seed=2).images)


def test_strokes_are_bright_on_a_dark_background_like_omniglot(glyphs):
    pixels = glyphs.images.float()
    assert pixels.mean() < 60 and pixels.median() <= 10
    assert pixels.max() >= 240  # pen noise keeps a few levels off pure white
    assert glyphs.spec.invert and glyphs.spec.channels == 1


def test_samples_of_a_class_are_closer_to_each_other_than_to_other_classes(glyphs):
    x = glyphs.images.float().reshape(glyphs.num_classes, 20, -1) / 255  # (N, 20, 784)
    first, second = x[:, 0], x[:, 1]
    distance = torch.cdist(first, second)  # (N, N): sample 0 of class i vs sample 1 of class j
    within = distance.diag().mean()
    between = (distance.sum() - distance.diag().sum()) / (distance.numel() - len(distance))
    assert within < 0.85 * between
    centroids = x.mean(1)  # (N, 784)
    nearest = torch.cdist(x.reshape(-1, x.shape[-1]), centroids).argmin(1)
    assert (nearest == torch.arange(glyphs.num_classes).repeat_interleave(20)).float().mean() > 0.8


def test_no_two_samples_of_a_class_are_identical(glyphs):
    x = glyphs.images.float().reshape(glyphs.num_classes, 20, -1)
    gaps = torch.cdist(x, x) + torch.eye(20) * 1e9  # (N, 20, 20), self-distance masked out
    assert gaps.min() > 0


def test_classes_come_in_families_that_serve_as_superclasses():
    data = load_synthetic(200, samples_per_class=1)
    assert len(set(data.superclasses)) == 10 == num_families(200)
    assert max(data.superclasses.count(f) for f in set(data.superclasses)) == 20
    assert len(set(load_synthetic(4, samples_per_class=1).superclasses)) == 3


def test_image_size_is_honoured():
    assert load_data("synthetic:2", image_size=40).image_shape == (1, 40, 40)


@pytest.mark.parametrize("spec", ["synthetic:1", "synthetic:x", "synthetic:-3"])
def test_a_bad_class_count_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="synthetic:N"):
        load_data(spec)
