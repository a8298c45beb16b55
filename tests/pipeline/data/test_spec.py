import pytest

from mtl.pipeline.data import SCHEMES, data_scheme, load_data, parse_data_spec
from mtl.pipeline.errors import ConfigError, DataError


@pytest.mark.parametrize(("spec", "scheme"), [
    ("omniglot:/data/omniglot", "omniglot"), ("folder:imgs", "folder"), ("synthetic", "synthetic"),
    ("synthetic:50", "synthetic"), ("cifar-fs:~/cifar", "cifar-fs"), ("fc100:c", "fc100"),
    ("mini-imagenet:m", "mini-imagenet"), ("Omniglot:x", "omniglot"),
])
def test_data_scheme_names_the_source_without_loading_it(spec, scheme):
    assert data_scheme(spec) == scheme  # none of these paths exists


def test_a_path_keeps_everything_after_the_first_colon():
    assert parse_data_spec("folder:C:/images") == ("folder", "C:/images")


@pytest.mark.parametrize("spec", ["imagenet:/x", "/data/omniglot", ""])
def test_an_unknown_scheme_lists_the_valid_ones(spec):
    with pytest.raises(ConfigError) as error:
        data_scheme(spec)
    assert all(usage in str(error.value) for usage in SCHEMES.values())


@pytest.mark.parametrize("spec", ["omniglot", "folder:", "fc100:  "])
def test_a_scheme_that_needs_a_path_says_so(spec):
    with pytest.raises(ConfigError, match="needs a path"):
        data_scheme(spec)


@pytest.mark.parametrize("spec", ["synthetic:0", "synthetic:ten"])
def test_a_bad_synthetic_class_count_fails_at_parse_time(spec):
    with pytest.raises(ConfigError, match="synthetic:N"):
        data_scheme(spec)


@pytest.mark.parametrize("scheme", ["omniglot", "folder", "cifar-fs", "fc100", "mini-imagenet"])
def test_a_missing_path_is_a_data_error_naming_it(scheme, tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError, match=str(missing)):
        load_data(f"{scheme}:{missing}")


def test_the_spec_string_is_recorded_in_the_provenance():
    data = load_data("synthetic:3")
    assert data.provenance["spec"] == "synthetic:3" and data.provenance["scheme"] == "synthetic"


@pytest.mark.parametrize("size", [4, 12.5, True])
def test_a_bad_image_size_is_a_config_error(size):
    with pytest.raises(ConfigError, match="image size"):
        load_data("synthetic:2", image_size=size)
