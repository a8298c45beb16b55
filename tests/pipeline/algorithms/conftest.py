import pytest

from tests.pipeline.meta.tiny import tiny_batch


@pytest.fixture
def batch():
    return tiny_batch()
