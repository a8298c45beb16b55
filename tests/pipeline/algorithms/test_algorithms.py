import pytest
import torch

from mtl.pipeline.algorithms import algorithm_names, get_algorithm, list_algorithms, register_algorithm
from mtl.pipeline.algorithms.joint import JointOptions, shared_parameters, transfer_update
from mtl.pipeline.algorithms.reptile import adapted_mean, reptile_update
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.algorithm import Algorithm, LearnerInputs
from mtl.pipeline.meta.batch import Hyper
from mtl.pipeline.meta.heads import TASK_HEADS
from tests.pipeline.meta.tiny import tiny_batch, tiny_learner

JOINT = get_algorithm("joint")


def test_unknown_algorithm_lists_the_valid_names():
    assert {"adml", "anil", "joint", "maml", "metabaseline", "metasgd", "mtl", "protonet", "reptile",
            "siamese"} <= set(algorithm_names())
    with pytest.raises(ConfigError, match=", ".join(algorithm_names())):
        get_algorithm("mamba")


def test_the_registry_lists_one_algorithm_per_module_and_refuses_a_second_of_a_name():
    assert list_algorithms() == algorithm_names() == sorted(algorithm_names())
    assert all(get_algorithm(name).name == name for name in algorithm_names())

    class Impostor(Algorithm):
        name = "maml"

    Impostor.__module__ = "mtl.pipeline.algorithms.maml"
    with pytest.raises(ConfigError, match="'maml' is already registered"):
        register_algorithm(Impostor)

    class Misplaced(Algorithm):
        name = "elsewhere"

    with pytest.raises(TypeError, match="must be defined in a module named elsewhere.py"):
        register_algorithm(Misplaced)


def test_options_are_typed_and_unknown_ones_named():
    assert JOINT.parse_options({"beta": "0.25", "meta-learner": "reptile"}) == JointOptions(0.25, "reptile")
    with pytest.raises(ConfigError, match="joint has no option 'gamma'; its options: beta, meta-learner"):
        JOINT.parse_options({"gamma": 1})
    with pytest.raises(ConfigError, match="beta must be in"):
        JOINT.parse_options({"beta": "2"})
    with pytest.raises(ConfigError, match="maml has no option 'beta'; its options: none"):
        get_algorithm("maml").parse_options({"beta": 0.5})


def test_reptile_moves_theta_by_epsilon_towards_the_mean_adapted_weights(batch):
    learner = tiny_learner()
    hp = Hyper(inner_steps=3)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    target, _ = adapted_mean(learner, batch, hp)
    singles = [adapted_mean(learner, batch.part(slice(b, b + 1)), hp)[0] for b in range(len(batch))]
    for name, value in target.items():  # vmapped mean == mean of tasks adapted one by one
        torch.testing.assert_close(value, sum(s[name] for s in singles) / len(batch), msg=name)
        # adaptation moved the body's weights; the shared class vector gets no Reptile update (the
        # class-mean of a softmax head's gradient is zero), which is why Reptile pairs with proto init
        if name.startswith("body.") and name.endswith("weight"):
            assert not torch.allclose(value, before[name])
    epsilon = 0.25
    reptile_update(learner, batch, [torch.optim.SGD(learner.parameters(), lr=epsilon)], hp)
    for name, theta in before.items():
        expected = theta + epsilon * (target[name] - theta)
        torch.testing.assert_close(learner.get_parameter(name), expected, msg=name)


def _joint_learner(meta_learner, beta=0.5):
    return tiny_learner(transfer_classes=10, seed=3), Hyper(inner_steps=2, options=JointOptions(beta, meta_learner))


@pytest.mark.parametrize("meta_learner", ["maml", "reptile"])
def test_joint_with_beta_one_is_its_meta_learner(batch, meta_learner):
    joint, hp_joint = _joint_learner(meta_learner, beta=1.0)
    alone, hp = _joint_learner(meta_learner)
    JOINT.update(joint, batch, JOINT.optimizers(joint, 0.01, hp_joint), hp_joint)
    get_algorithm(meta_learner).update(alone, batch, JOINT.optimizers(alone, 0.01, hp)[:1], hp)
    for name, tensor in shared_parameters(alone).items():
        torch.testing.assert_close(joint.get_parameter(name), tensor, msg=name)


def test_joint_with_beta_zero_is_plain_transfer(batch):
    joint, hp = _joint_learner("maml", beta=0.0)
    alone, _ = _joint_learner("maml")
    JOINT.update(joint, batch, JOINT.optimizers(joint, 0.01, hp), hp)
    transfer_update(alone, batch, JOINT.optimizers(alone, 0.01, hp)[1])
    for name, tensor in shared_parameters(alone).items():
        torch.testing.assert_close(joint.get_parameter(name), tensor, msg=name)


def test_joint_with_half_beta_lies_between(batch):
    meta, _ = _joint_learner("maml")
    transfer, _ = _joint_learner("maml")
    half, _ = _joint_learner("maml")
    for learner, beta in ((meta, 1.0), (transfer, 0.0), (half, 0.5)):
        hp = Hyper(inner_steps=2, options=JointOptions(beta))
        JOINT.update(learner, batch, JOINT.optimizers(learner, 0.01, hp), hp)
    for name in shared_parameters(half):
        mid = 0.5 * meta.get_parameter(name) + 0.5 * transfer.get_parameter(name)
        torch.testing.assert_close(half.get_parameter(name), mid, msg=name)


@pytest.mark.parametrize("name", sorted(set(algorithm_names()) - {"mtl", "joint"}))
def test_every_update_changes_the_parameters_and_reports_a_loss(name):
    alg = get_algorithm(name)
    head = alg.head or "linear"
    rules = TASK_HEADS[head].rules
    learner = tiny_learner(adapt=alg.inner, learn_lr=alg.learn_lr, head=head,
                           head_init="learned" if "learned" in rules else rules[0], dtype=torch.float32)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    hp = Hyper(inner_steps=1, options=alg.parse_options({}))
    metrics = alg.update(learner, tiny_batch(dtype=torch.float32), alg.optimizers(learner, 0.01, hp), hp)
    assert torch.isfinite(metrics["loss"])
    changed = [n for n, t in learner.named_parameters() if not torch.equal(t, before[n])]
    assert any(n.startswith("body.") for n in changed)
    if alg.learn_lr:
        assert any(n.startswith("inner_lrs.") for n in changed)


def test_metabaseline_classifies_by_scaled_cosine_to_class_means_and_keeps_running_statistics(batch):
    """Meta-Baseline (Chen et al. 2021): logits τ·cos(f(q), μ_c), no inner steps; the query loss trains the
    extractor and τ while BatchNorm keeps the pretrained statistics (eval mode, as the device embeds)."""
    alg = get_algorithm("metabaseline")
    spec = alg.spec(LearnerInputs(backbone="conv4", in_channels=1, image_size=8, options={"width": 4, "depth": 2},
                                  head="linear", head_init="learned", adapt=None, inner_lr=0.3, train_classes=10))
    assert (spec.head, spec.head_init, spec.adapt, spec.running_stats) == ("cosine", "proto", "head", True)
    torch.manual_seed(0)
    learner = alg.build(spec).to(torch.float64)
    p = dict(learner.named_parameters())
    b = 0
    out = alg.task_outputs(learner, p, batch.support[b], batch.support_labels[b], batch.query[b], batch.n_way, 5,
                           True)
    learner.train()
    assert not learner.body.training  # running statistics, even in training mode
    with torch.no_grad():
        fs, fq = learner.body(batch.support[b]), learner.body(batch.query[b])
        means = torch.stack([fs[batch.support_labels[b] == c].mean(0) for c in range(batch.n_way)])
        cosine = torch.nn.functional.normalize(fq, dim=-1) @ torch.nn.functional.normalize(means, dim=-1).T
    torch.testing.assert_close(out.detach(), learner.head.log_scale.exp().detach() * cosine)
    stats = {n: t.clone() for n, t in learner.body.named_buffers()}
    weights = {n: t.detach().clone() for n, t in learner.named_parameters()}
    alg.update(learner, batch, alg.optimizers(learner, 1e-2, Hyper(inner_steps=5)), Hyper(inner_steps=5))
    assert all(torch.equal(t, stats[n]) for n, t in learner.body.named_buffers())
    moved = [n for n, t in learner.named_parameters() if not torch.equal(t, weights[n])]
    assert "head.log_scale" in moved and any(n.startswith("body.") for n in moved)
