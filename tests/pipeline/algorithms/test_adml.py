"""ADML (Yin et al. 2018): adversarial samples in both loops buy robustness to the same attack at evaluation."""

import numpy as np
import pytest
import torch
from torch.func import vmap

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.algorithms.adml import ADMLOptions, adversarial_pair
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.adversarial import fgsm
from mtl.pipeline.meta.batch import Hyper, batch_outputs, query_metrics
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.pipeline.meta.tiny import tiny_batch, tiny_learner
from tests.tolerance import assert_better, assert_float_close

EPSILON = 0.1
SMALL = dict(data="synthetic:60", ways=5, shots=1, queries=5, meta_batch=4, inner_steps=2, iterations=40,
             outer_lr=3e-3, val_every=40, val_episodes=20, device="cpu", calibrate_episodes=0,
             backbone_options={"width": 32})
ATTACKED = EvalConfig(ways=5, shots=1, queries=5, episodes=150, seed=5, attack_epsilon=EPSILON)


def test_fgsm_moves_every_input_by_epsilon_up_the_loss():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 6, generator=g, dtype=torch.float64)
    x, y = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.arange(8) % 3
    logits = lambda inp: inp @ weight.T  # noqa: E731
    adv = fgsm(logits, x, y, 0.05)
    assert_float_close((adv - x).abs(), torch.full_like(x, 0.05), dtype=np.float64)
    loss = lambda inp: torch.nn.functional.cross_entropy(logits(inp), y)  # noqa: E731
    assert loss(adv) > loss(x)
    with torch.no_grad():  # as in an evaluation: torch.func.grad still differentiates
        assert torch.equal(fgsm(logits, x, y, 0.05), adv)


def test_both_cross_losses_drive_the_update_and_a_vanishing_epsilon_is_twice_maml():
    """ε → 0: φ_clean on adversarial queries and φ_adv on clean ones are both MAML's task, so the ADML loss is
    twice MAML's query loss on the same batch."""
    learner, batch = tiny_learner(), tiny_batch()
    p = learner.state_params()
    maml_loss, _ = query_metrics(learner, batch_outputs(learner, p, batch, 2), batch.query_labels)
    pair = vmap(lambda sx, sy, qx, qy: adversarial_pair(learner, p, sx, sy, qx, qy, batch.n_way, 2, False, 1e-12),
                randomness="same")(batch.support, batch.support_labels, batch.query, batch.query_labels)
    for outputs in pair:
        loss, _ = query_metrics(learner, outputs, batch.query_labels)
        assert_float_close(loss, maml_loss, dtype=np.float64, ulps=1e4)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    adml = get_algorithm("adml")
    hp = Hyper(inner_steps=2, options=ADMLOptions(epsilon=0.05))
    metrics = adml.update(learner, batch, adml.optimizers(learner, 1e-2, hp), hp)
    assert set(metrics) >= {"loss", "acc", "adversarial_acc"} and metrics["adversarial_acc"] <= 1
    assert any(not torch.equal(before[n], t) for n, t in learner.named_parameters())


@pytest.fixture(scope="module")
def robust_and_plain(tmp_path_factory):
    out = tmp_path_factory.mktemp("adml")
    for algorithm, options in (("maml", {}), ("adml", {"epsilon": EPSILON})):
        meta_train(MetaTrainConfig(out=str(out / algorithm), algorithm=algorithm, options=options, **SMALL))
    return out / "adml", out / "maml"


def test_adml_is_more_robust_than_maml_to_the_attack_it_trained_against(robust_and_plain):
    adml, maml = robust_and_plain
    clean = EvalConfig(ways=5, shots=1, queries=5, episodes=150, seed=5)
    maml_clean = evaluate_path(maml, None, clean, "cpu").result.per_episode
    maml_attacked = evaluate_path(maml, None, ATTACKED, "cpu").result.per_episode
    adml_attacked = evaluate_path(adml, None, ATTACKED, "cpu").result.per_episode
    assert_better(maml_clean, maml_attacked)  # the attack works (same episodes)
    assert_better(adml_attacked, maml_attacked)  # and ADML holds up better against it


def test_an_attack_needs_a_checkpoint_and_the_models_own_adaptation(robust_and_plain, tmp_path):
    from mtl.exporters.bundle_export import export_bundle

    adml, _ = robust_and_plain
    bundle = export_bundle(adml, tmp_path / "adml.mtlb", single_file=True, adapt="head").path
    with pytest.raises(ConfigError, match="needs a checkpoint"):
        evaluate_path(bundle, None, ATTACKED, "cpu")
    with pytest.raises(ConfigError, match="not --method prototype"):
        evaluate_path(adml, None, EvalConfig(method="prototype", attack_epsilon=EPSILON), "cpu")
    with pytest.raises(ConfigError, match="attack-epsilon must be"):
        EvalConfig(attack_epsilon=-1.0)
    with pytest.raises(ConfigError, match="epsilon must be positive"):
        MetaTrainConfig(algorithm="adml", options={"epsilon": 0}, **{k: v for k, v in SMALL.items()})
