import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl.pipeline.data import ClassImages, InputSpec, Splits, make_splits
from mtl.pipeline.errors import ConfigError, DataError


def make_data(group_sizes=(5, 3, 4, 2, 6, 1), provenance=None, grouped=True) -> ClassImages:
    """One 2-image class per member; class `g<i>/c<j>` belongs to superclass `g<i>` when grouped."""
    names = [f"g{g}/c{c}" for g, size in enumerate(group_sizes) for c in range(size)]
    supers = [name.split("/")[0] for name in names] if grouped else None
    stacks = [torch.full((2, 1, 8, 8), i, dtype=torch.uint8) for i in range(len(names))]
    return ClassImages.from_arrays(stacks, names, supers, InputSpec(size=8), provenance)


def all_names(splits: Splits) -> list[str]:
    return [*splits.train, *splits.val, *splits.test]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=3, max_size=15), seed=st.integers(0, 2**31),
       grouped=st.booleans())
def test_splits_are_disjoint_cover_every_class_and_none_is_empty(sizes, seed, grouped):
    data = make_data(sizes, grouped=grouped)
    splits = make_splits(data, seed=seed)
    names = all_names(splits)
    assert sorted(names) == sorted(data.class_names)  # each class exactly once
    assert splits.train and splits.val and splits.test


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=3, max_size=15), seed=st.integers(0, 2**31))
def test_a_superclass_never_straddles_two_splits(sizes, seed):
    splits = make_splits(make_data(sizes), seed=seed)
    groups = [{name.split("/")[0] for name in part} for part in (splits.train, splits.val, splits.test)]
    assert groups[0].isdisjoint(groups[1]) and groups[0].isdisjoint(groups[2]) and groups[1].isdisjoint(groups[2])


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    data = make_data((3,) * 12)
    assert make_splits(data, seed=4) == make_splits(data, seed=4)
    assert any(make_splits(data, seed=4) != make_splits(data, seed=s) for s in range(5, 10))


def test_class_fractions_are_followed_when_classes_allow_it():
    splits = make_splits(make_data(grouped=False, group_sizes=(100,)), fractions=(0.7, 0.1, 0.2))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 10, 20)


def test_a_zero_fraction_leaves_that_split_empty():
    splits = make_splits(make_data(), fractions=(0.8, 0.0, 0.2))
    assert splits.val == () and splits.train and splits.test


def test_too_few_superclasses_for_three_splits_is_an_error_naming_the_count():
    with pytest.raises(DataError, match="only 2 superclasses"):
        make_splits(make_data((4, 4)))


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_a_config_error(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        make_splits(make_data(), fractions=fractions)


def test_an_official_split_is_used_as_given():
    official = {"train": ["g0/c0", "g1/c0"], "val": ["g2/c0"], "test": ["g3/c0"]}
    data = make_data((1, 1, 1, 1), provenance={"official_split": official})
    assert make_splits(data, seed=9).to_dict() == official
    assert make_splits(data, by="superclass").to_dict() != official


def test_asking_for_an_official_split_that_does_not_exist_is_an_error():
    with pytest.raises(DataError, match="no official split"):
        make_splits(make_data(), by="official")


def test_rotated_copies_follow_their_base_class():
    data = make_data()
    splits = make_splits(data, seed=3)
    rotated = data.with_rotations()
    train = [rotated.class_names[i] for i in splits.indices(rotated, "train")]
    assert len(train) == 4 * len(splits.train)
    assert {name.split("@")[0] for name in train} == set(splits.train)
    assert make_splits(rotated, seed=3) == splits


def test_indices_select_the_classes_of_a_part_in_data_order():
    data = make_data()
    splits = make_splits(data)
    for part in ("train", "val", "test"):
        chosen = splits.indices(data, part)
        assert chosen == sorted(chosen)
        assert [data.class_names[i] for i in chosen] == list(getattr(splits, part))


def test_indices_name_a_class_the_data_lacks():
    splits = Splits(train=("g0/c0", "nowhere"), val=(), test=())
    with pytest.raises(DataError, match="'nowhere'"):
        splits.indices(make_data(), "train")
    with pytest.raises(ConfigError, match="'validation'"):
        splits.indices(make_data(), "validation")


def test_to_dict_and_from_dict_round_trip():
    splits = make_splits(make_data())
    assert Splits.from_dict(splits.to_dict()) == splits


def test_a_class_in_two_parts_is_rejected():
    with pytest.raises(DataError, match="'a' is in both the train and the test split"):
        Splits.from_dict({"train": ["a"], "val": [], "test": ["a"]})


def test_superclass_test_holds_out_the_same_superclasses_and_splits_the_rest_by_class():
    data = make_data()
    by_group = make_splits(data, seed=4, by="superclass")
    mixed = make_splits(data, seed=4, by="superclass-test")
    assert mixed.test == by_group.test  # the held-out superclasses are those of the plain superclass split
    pooled = set(by_group.train) | set(by_group.val)
    assert set(mixed.train) | set(mixed.val) == pooled and mixed.train and mixed.val
    groups = {name.split("/")[0] for name in mixed.val}
    assert groups & {name.split("/")[0] for name in mixed.train}  # validation by class, inside training groups
    with pytest.raises(DataError, match="needs classes grouped in superclasses"):
        make_splits(make_data(grouped=False), by="superclass-test")
