"""Heads map (B, D) features to (B, N) logits for any N; the cosine head is bounded by its scale."""

import math

import pytest
import torch

from mtl.pipeline.errors import ConfigError
from mtl.pipeline.models import CosineHead, LinearHead, build_head


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("n_classes", [1, 2, 5, 37])
def test_heads_give_one_logit_per_class(kind: str, n_classes: int) -> None:
    head = build_head(kind, feature_dim=16, n_classes=n_classes)
    logits = head(torch.randn(7, 16))
    assert logits.shape == (7, n_classes)
    assert head.weight.shape == (n_classes, 16)


def test_linear_head_has_a_bias_per_class() -> None:
    head = build_head("linear", feature_dim=8, n_classes=3)
    assert isinstance(head, LinearHead) and head.bias.shape == (3,)
    features = torch.randn(4, 8)
    torch.testing.assert_close(head(features), features @ head.weight.T + head.bias)


def test_cosine_head_starts_at_scale_ten_and_is_bounded_by_its_scale() -> None:
    head = build_head("cosine", feature_dim=8, n_classes=5)
    assert isinstance(head, CosineHead)
    assert head.log_scale.shape == () and head.log_scale.requires_grad
    assert math.isclose(float(head.scale.detach()), 10.0, rel_tol=1e-6)
    with torch.no_grad():
        head.log_scale.fill_(math.log(3.0))
    features = torch.randn(64, 8) * 100
    logits = head(features)
    assert logits.abs().max() <= 3.0 * (1 + 8 * torch.finfo(torch.float32).eps)  # |cos| ≤ 1, up to rounding
    # a feature equal to a class weight scores exactly the scale
    torch.testing.assert_close(head(head.weight[:1] * 7)[0, 0], torch.tensor(3.0))


def test_cosine_scale_is_learned() -> None:
    head = build_head("cosine", feature_dim=8, n_classes=5)
    head(torch.randn(4, 8)).logsumexp(dim=1).sum().backward()
    assert head.log_scale.grad is not None and head.log_scale.grad != 0


@pytest.mark.parametrize(("kind", "kwargs", "culprit"), [
    ("softmax", {"feature_dim": 4, "n_classes": 2}, "valid heads: cosine, linear"),
    ("linear", {"feature_dim": 0, "n_classes": 2}, "feature_dim"),
    ("cosine", {"feature_dim": 4, "n_classes": 0}, "n_classes"),
])
def test_bad_head_arguments_raise_config_error(kind: str, kwargs: dict, culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        build_head(kind, **kwargs)
