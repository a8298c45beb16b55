import pytest

from tests.device_runtime.bundle_factory import write_bundle


@pytest.fixture
def bundle(tmp_path):
    """A tiny real bundle directory (tests/device_runtime/bundle_factory.py): no torch needed."""
    return write_bundle(tmp_path / "bundle")
