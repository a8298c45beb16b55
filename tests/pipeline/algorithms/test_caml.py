"""CAML (Zintgraf et al. 2019): the inner loop adapts only a per-task context vector that starts at 0; θ is the
outer loop's alone; FiLM at φ = 0 is the identity, so the head-only bundle is the model at its starting context."""

import numpy as np
import pytest
import torch

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.meta.batch import Hyper
from mtl.pipeline.meta.inner import inner_step
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.pipeline.meta.tiny import tiny_batch
from tests.tolerance import assert_float_close

CAML = get_algorithm("caml")
SPEC = dict(backbone="conv4", in_channels=1, image_size=8, options={"width": 4, "depth": 3}, head="linear",
            head_init="proto", adapt="head", inner_lr=1.0)


def caml_learner(**overrides):
    torch.manual_seed(0)
    return CAML.build(LearnerSpec(**{**SPEC, **overrides})).to(torch.float64)


def test_the_inner_loop_adapts_only_the_context_which_starts_at_zero_for_every_task():
    learner, batch = caml_learner(), tiny_batch()
    p = learner.state_params()
    before = {n: t.detach().clone() for n, t in p.items()}
    trajectories = [list(learner.adapt_trajectory(p, batch.support[b], batch.support_labels[b], batch.n_way, 3))
                    for b in range(len(batch))]
    for steps in trajectories:
        assert torch.equal(steps[0]["context"], torch.zeros(100, dtype=torch.float64))  # φ₀ = 0, per task
        assert set(steps[-1]) == {"context", "head.weight", "head.bias"}  # no body parameter is adapted
        assert steps[-1]["context"].abs().max() > 0
    for name, value in learner.state_params().items():  # θ is untouched by the inner loop
        assert torch.equal(value, before[name]), name
    # a task's context does not depend on the tasks adapted before it
    again = list(learner.adapt_trajectory(p, batch.support[1], batch.support_labels[1], batch.n_way, 3))
    assert torch.equal(again[-1]["context"], trajectories[1][-1]["context"])


def test_each_step_is_sgd_on_the_support_loss_and_the_head_follows_the_context():
    learner, batch = caml_learner(), tiny_batch()
    p, (sx, sy) = learner.state_params(), (batch.support[0], batch.support_labels[0])
    fast, loss_fn = learner._problem(p, sx, sy, batch.n_way)
    expected, loss = inner_step(fast, sx, sy, 1.0, loss_fn=loss_fn)
    adapted = learner.adapt(p, sx, sy, batch.n_way, 1)
    assert_float_close(adapted["context"].detach(), expected["context"].detach(), dtype=np.float64)
    assert loss_fn(expected, sx, sy) < loss  # the step lowers the support loss
    feats = learner.context_features(p, sx, adapted["context"])
    means = torch.stack([feats[sy == c].mean(0) for c in range(batch.n_way)])
    assert_float_close(adapted["head.weight"].detach(), 2 * means.detach(), dtype=np.float64)


def test_film_at_zero_context_is_the_identity():
    learner, batch = caml_learner(), tiny_batch()
    p = learner.state_params()
    plain = learner.features(p, batch.support[0])
    assert_float_close(learner.context_features(p, batch.support[0], torch.zeros(100, dtype=torch.float64)),
                       plain.detach(), dtype=np.float64)


def test_the_outer_step_trains_theta_through_the_adapted_context():
    learner, batch, hp = caml_learner(), tiny_batch(), Hyper(inner_steps=2)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    CAML.update(learner, batch, CAML.optimizers(learner, 1e-2, hp), hp)
    changed = {n for n, t in learner.named_parameters() if not torch.equal(t, before[n])}
    assert {"film.weight", "body.blocks.0.0.weight"} <= changed


def test_sine_waves_take_the_context_as_extra_inputs(tmp_path):
    meta_train(MetaTrainConfig(out=str(tmp_path / "sine"), algorithm="caml", data="sinusoid", shots=5, queries=5,
                               meta_batch=4, inner_steps=2, inner_lr=1.0, iterations=5, val_every=5,
                               val_episodes=10, device="cpu", calibrate_episodes=0))
    result = evaluate_path(tmp_path / "sine", None, EvalConfig(shots=5, episodes=10), "cpu").result
    assert np.isfinite(result.mean) and result.mean >= 0
    learner = CAML.build(LearnerSpec(backbone="mlp", in_channels=1, image_size=1, head="none", head_init="zero",
                                     adapt="all", inner_lr=1.0)).double()
    x, phi = torch.randn(7, 1, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    concatenated = torch.nn.functional.linear(torch.cat([x, phi.expand(7, 4)], dim=1),
                                              torch.cat([learner.body.layers[0].weight, learner.film.weight], dim=1),
                                              learner.body.layers[0].bias)
    rest = learner.body.layers[1:](concatenated)  # the MLP on [x, φ]: what the paper concatenates
    assert_float_close(learner.context_features(learner.state_params(), x, phi).detach(), rest.detach(),
                       dtype=np.float64)


def test_export_ships_the_extractor_at_context_zero_or_says_why_it_cannot_adapt_the_context(tmp_path):
    from mtl.exporters.bundle_export import export_bundle

    run = tmp_path / "caml"
    meta_train(MetaTrainConfig(out=str(run), algorithm="caml", data="synthetic:30", ways=3, shots=1, queries=2,
                               meta_batch=2, inner_steps=1, iterations=2, val_every=2, val_episodes=4, device="cpu",
                               calibrate_episodes=0, backbone_options={"width": 8}))
    with pytest.raises(CheckpointError, match="context vector inside the extractor.*--adapt head"):
        export_bundle(run, tmp_path / "refused.mtlb", single_file=True)
    bundle = export_bundle(run, tmp_path / "head.mtlb", single_file=True, adapt="head").path
    cfg = EvalConfig(ways=3, shots=1, queries=3, episodes=10, seed=1)
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner

    learner = load_learner(load_checkpoint(run)).learner
    assert isinstance(learner, MetaLearner) and learner.spec.head_init == "proto"
    assert 0 <= evaluate_path(bundle, None, cfg, "cpu").result.mean <= 1
