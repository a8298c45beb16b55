import pytest
import torch

from mtl.pipeline.data.class_images import ClassImages
from mtl.pipeline.data.images import InputSpec
from mtl.pipeline.data.sampler import EpisodeSampler
from mtl.pipeline.errors import ConfigError, DataError


def make_data(counts=(6, 7, 8, 9, 10), size=8) -> ClassImages:
    """Each image holds its class index in pixel (0,0,0) and its position in pixel (0,0,1)."""
    stacks = []
    for c, n in enumerate(counts):
        stack = torch.zeros(n, 1, size, size, dtype=torch.uint8)
        stack[:, 0, 0, 0] = c
        stack[:, 0, 0, 1] = torch.arange(n)
        stacks.append(stack)
    return ClassImages.from_arrays(stacks, [f"c{i}" for i in range(len(counts))], None, InputSpec(size=size))


def test_episodes_have_the_requested_shapes_and_class_major_labels():
    sampler = EpisodeSampler(make_data(), n_way=3, k_shot=2, q_query=4, meta_batch=5, seed=1)
    ep = sampler.sample()
    assert ep.support.shape == (5, 6, 1, 8, 8) and ep.support.dtype == torch.uint8
    assert ep.query.shape == (5, 12, 1, 8, 8)
    assert ep.support_labels[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert ep.query_labels[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_every_image_belongs_to_its_labelled_class_and_none_repeats_in_an_episode():
    sampler = EpisodeSampler(make_data(), n_way=4, k_shot=3, q_query=3, meta_batch=50, seed=2)
    ep = sampler.sample()
    for b in range(50):
        true_support = ep.support[b, :, 0, 0, 0].long()
        assert torch.equal(true_support, ep.classes[b][ep.support_labels[b]])
        assert torch.equal(ep.query[b, :, 0, 0, 0].long(), ep.classes[b][ep.query_labels[b]])
        rows = torch.cat([ep.support_index[b], ep.query_index[b]])
        assert rows.unique().numel() == rows.numel()
        assert ep.classes[b].unique().numel() == 4


def test_classes_and_images_are_covered_uniformly_enough():
    data = make_data(counts=(10,) * 5)
    sampler = EpisodeSampler(data, n_way=2, k_shot=1, q_query=1, meta_batch=4000, seed=3)
    ep = sampler.sample()
    class_freq = torch.bincount(ep.classes.flatten(), minlength=5).float() / ep.classes.numel()
    assert torch.allclose(class_freq, torch.full((5,), 0.2), atol=0.02)
    pos_freq = torch.bincount(ep.support[:, :, 0, 0, 1].flatten().long(), minlength=10).float()
    assert pos_freq.min() > 0.7 * pos_freq.mean()


def test_same_seed_same_episodes_and_state_restores_the_stream():
    a = EpisodeSampler(make_data(), 3, 1, 2, meta_batch=4, seed=7)
    b = EpisodeSampler(make_data(), 3, 1, 2, meta_batch=4, seed=7)
    assert torch.equal(a.sample().support_index, b.sample().support_index)
    state = a.state_dict()
    first = a.sample().query_index
    a.load_state_dict(state)
    assert torch.equal(a.sample().query_index, first)
    c = EpisodeSampler(make_data(), 3, 1, 2, meta_batch=4, seed=8)
    assert not torch.equal(c.sample().support_index, b.sample().support_index)


def test_too_few_images_names_the_class_and_counts():
    with pytest.raises(DataError, match=r"class 'c0' has 6 images, but 2 shots \+ 5 queries need 7"):
        EpisodeSampler(make_data(), 3, 2, 5)


def test_too_few_classes_says_how_many():
    with pytest.raises(DataError, match="6-way episodes need 6 classes, but the data has only 5"):
        EpisodeSampler(make_data(), 6, 1, 1)


@pytest.mark.parametrize("args", [(1, 1, 1, 1), (3, 0, 1, 1), (3, 1, 0, 1), (3, 1, 1, 0)])
def test_bad_episode_shape_is_a_config_error(args):
    with pytest.raises(ConfigError):
        EpisodeSampler(make_data(), *args)
