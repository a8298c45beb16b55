"""Task heads are objects: each kind initialises, scores and deploys itself, with the schema's names."""

import pytest
import torch

from mtl.device_runtime.schema import HEAD_INITS, HEAD_TYPES
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.heads import TASK_HEADS, build_task_head, class_means, prototype_logits


def test_the_heads_a_bundle_carries_are_the_schemas_and_every_rule_is_the_schemas():
    deployed = {TASK_HEADS[kind](8, "proto").deploy().kind for kind in TASK_HEADS if not TASK_HEADS[kind].regression}
    assert deployed == set(HEAD_TYPES)
    assert all(set(head.rules) <= set(HEAD_INITS) for head in TASK_HEADS.values())


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_proto_head_ranks_classes_as_the_nearest_class_mean(kind):
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(12, 6, generator=g), torch.arange(3).repeat(4)
    head = build_task_head(kind, 6, "proto")
    p = dict(head.named_parameters())
    fast = head.init_from_labels(p, feats, labels, 3)
    query = torch.randn(20, 6, generator=g)
    nearest = prototype_logits(query, class_means(feats, labels, 3)).argmax(1)
    if kind == "linear":  # 2μ·q − ‖μ‖² = −‖q − μ‖² + ‖q‖²: the same ranking, exactly
        assert torch.equal(head.logits(p, fast, query).argmax(1), nearest)
    assert fast["head.weight"].shape == (3, 6)


def test_a_learned_head_replicates_one_vector_for_any_number_of_classes():
    head = build_task_head("linear", 4, "learned")
    p = dict(head.named_parameters())
    for n in (2, 7):
        fast = head.init(p, torch.zeros(n, 4), torch.eye(n))
        assert fast["head.weight"].shape == (n, 4) and fast["head.bias"].shape == (n,)


def test_a_prototype_head_deploys_as_the_proto_linear_head_and_a_cosine_head_refuses_zeros():
    deployed = build_task_head("prototype", 4, "proto").deploy()
    assert (deployed.kind, deployed.rule) == ("linear", "proto")
    with pytest.raises(ConfigError, match="cannot start from zero class vectors"):
        build_task_head("cosine", 4, "zero")
    with pytest.raises(ConfigError, match="unknown head 'ridge'"):
        build_task_head("ridge", 4, "proto")
