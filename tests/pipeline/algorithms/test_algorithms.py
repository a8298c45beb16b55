import pytest
import torch

from mtl.pipeline.algorithms import ALGORITHMS, Hyper, get_algorithm
from mtl.pipeline.algorithms.joint import joint_optimizers, joint_update, shared_parameters, transfer_update
from mtl.pipeline.algorithms.reptile import adapted_mean, reptile_update
from mtl.pipeline.errors import ConfigError

from .conftest import tiny_batch, tiny_learner


def test_unknown_algorithm_lists_the_valid_names():
    with pytest.raises(ConfigError, match="maml, reptile, metasgd, anil, protonet, mtl, joint"):
        get_algorithm("mamba")


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


def _joint_learner(meta_learner):
    return tiny_learner(transfer_classes=10, seed=3), Hyper(inner_steps=2, meta_learner=meta_learner)


@pytest.mark.parametrize("meta_learner", ["maml", "reptile"])
def test_joint_with_beta_one_is_its_meta_learner(batch, meta_learner):
    joint, hp = _joint_learner(meta_learner)
    alone, _ = _joint_learner(meta_learner)
    hp_joint = Hyper(inner_steps=2, meta_learner=meta_learner, beta=1.0)
    joint_update(joint, batch, joint_optimizers(joint, 0.01, hp_joint), hp_joint)
    meta_update = get_algorithm(meta_learner).update
    meta_update(alone, batch, joint_optimizers(alone, 0.01, hp)[:1], hp)
    for name, tensor in shared_parameters(alone).items():
        torch.testing.assert_close(joint.get_parameter(name), tensor, msg=name)


def test_joint_with_beta_zero_is_plain_transfer(batch):
    joint, _ = _joint_learner("maml")
    alone, _ = _joint_learner("maml")
    hp = Hyper(inner_steps=2, beta=0.0)
    joint_update(joint, batch, joint_optimizers(joint, 0.01, hp), hp)
    transfer_update(alone, batch, joint_optimizers(alone, 0.01, hp)[1])
    for name, tensor in shared_parameters(alone).items():
        torch.testing.assert_close(joint.get_parameter(name), tensor, msg=name)


def test_joint_with_half_beta_lies_between(batch):
    meta, _ = _joint_learner("maml")
    transfer, _ = _joint_learner("maml")
    half, _ = _joint_learner("maml")
    for learner, beta in ((meta, 1.0), (transfer, 0.0), (half, 0.5)):
        hp = Hyper(inner_steps=2, beta=beta)
        joint_update(learner, batch, joint_optimizers(learner, 0.01, hp), hp)
    for name in shared_parameters(half):
        mid = 0.5 * meta.get_parameter(name) + 0.5 * transfer.get_parameter(name)
        torch.testing.assert_close(half.get_parameter(name), mid, msg=name)


@pytest.mark.parametrize("name", sorted(set(ALGORITHMS) - {"mtl", "joint"}))
def test_every_update_changes_the_parameters_and_reports_a_loss(name):
    alg = get_algorithm(name)
    learner = tiny_learner(adapt=alg.adapt, learn_lr=alg.learn_lr, dtype=torch.float32)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    hp = Hyper(inner_steps=1)
    metrics = alg.update(learner, tiny_batch(dtype=torch.float32), alg.make_optimizers(learner, 0.01, hp), hp)
    assert torch.isfinite(metrics["loss"])
    changed = [n for n, t in learner.named_parameters() if not torch.equal(t, before[n])]
    assert any(n.startswith("body.") for n in changed)
    if alg.learn_lr:
        assert any(n.startswith("inner_lrs.") for n in changed)
