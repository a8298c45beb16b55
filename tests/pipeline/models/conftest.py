"""Shared fixtures for the model tests: small, seeded inputs."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def omniglot_batch() -> torch.Tensor:
    """(4, 1, 28, 28) float images, the Omniglot shape."""
    return torch.rand(4, 1, 28, 28)


@pytest.fixture
def mini_imagenet_batch() -> torch.Tensor:
    """(2, 3, 84, 84) float images, the miniImageNet shape."""
    return torch.rand(2, 3, 84, 84)
