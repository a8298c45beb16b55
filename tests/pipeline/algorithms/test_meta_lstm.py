"""The LSTM meta-learner (Ravi & Larochelle 2017): a learned, coordinate-wise update rule that is SGD at its
extreme gates, learns from the meta-gradient, and runs as the bundle's adapt_step on the device."""

import json
import math

import numpy as np
import pytest
import torch

from mtl.device_runtime.errors import BundleError, ConfigError
from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.algorithms.meta_lstm import preprocess
from mtl.pipeline.meta.batch import Hyper
from mtl.pipeline.meta.learner import LearnerSpec
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.pipeline.meta.tiny import tiny_batch
from tests.tolerance import assert_equivalent, assert_float_close

META_LSTM = get_algorithm("meta-lstm")
SPEC = dict(backbone="conv4", in_channels=1, image_size=8, options={"width": 4, "depth": 2}, adapt="head",
            inner_lr=0.3)


def lstm_learner(dtype=torch.float64, **overrides):
    torch.manual_seed(0)
    return META_LSTM.build(LearnerSpec(**{**SPEC, **overrides})).to(dtype)


def test_the_preprocessing_is_log_magnitude_and_sign_or_a_scaled_value():
    x = torch.tensor([1.0, -math.e ** 5, 0.0, -math.exp(-20)], dtype=torch.float64)
    expected = torch.tensor([[0.0, 1.0], [0.5, -1.0], [-1.0, 0.0], [-1.0, -math.exp(-10)]], dtype=torch.float64)
    assert_float_close(preprocess(x), expected, dtype=np.float64)


def test_with_its_forget_gate_at_one_and_its_input_gate_at_the_lr_it_is_sgd():
    from mtl.pipeline.meta.learner import MetaLearner

    lr, steps = 0.3, 4
    learner = lstm_learner()
    with torch.no_grad():
        rule = learner.update_rule
        rule.forget.weight.zero_(), rule.forget.bias.fill_(100.0)  # σ(100) is 1 in float64
        rule.input.weight.zero_(), rule.input.bias.fill_(math.log(lr / (1 - lr)))  # σ(b) = lr
        learner.head.init_weight.normal_(0, 0.3)
    sgd = MetaLearner(LearnerSpec(**SPEC)).to(torch.float64)
    sgd.load_state_dict(learner.state_dict(), strict=False)
    batch = tiny_batch()
    for b in range(len(batch)):
        args = (batch.support[b], batch.support_labels[b], batch.n_way, steps)
        learned = learner.adapt(learner.state_params(), *args)
        plain = sgd.adapt(sgd.state_params(), *args, first_order=True)
        for name in plain:
            assert_float_close(learned[name], plain[name], dtype=np.float64, ulps=256, err_msg=name)


def test_the_meta_gradient_trains_the_rule_and_the_initialisation():
    learner, batch, hp = lstm_learner(), tiny_batch(), Hyper(inner_steps=3)
    before = {n: t.detach().clone() for n, t in learner.named_parameters()}
    optimizers = META_LSTM.optimizers(learner, 1e-2, hp)
    losses = [float(META_LSTM.update(learner, batch, optimizers, hp)["loss"]) for _ in range(10)]
    changed = {n for n, t in learner.named_parameters() if not torch.equal(t, before[n])}
    assert {"update_rule.forget.weight", "update_rule.input.bias", "update_rule.cell.weight_ih",
            "head.init_weight"} <= changed
    assert losses[-1] < losses[0]


def test_the_input_gate_starts_at_the_inner_lr_which_must_be_a_sigmoids_value():
    learner = lstm_learner(inner_lr=0.2)
    assert torch.sigmoid(learner.update_rule.input.bias).item() == pytest.approx(0.2)
    with pytest.raises(Exception, match=r"must be in \(0, 1\)"):
        lstm_learner(inner_lr=1.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from mtl.exporters.bundle_export import export_bundle

    out = tmp_path_factory.mktemp("meta-lstm")
    meta_train(MetaTrainConfig(out=str(out / "run"), algorithm="meta-lstm", data="synthetic:60", ways=5, shots=1,
                               queries=5, meta_batch=4, inner_steps=3, iterations=20, outer_lr=3e-3, val_every=20,
                               val_episodes=20, device="cpu", calibrate_episodes=0, backbone_options={"width": 16}))
    return out / "run", export_bundle(out / "run", out / "lstm.mtlb", single_file=True).path


def test_the_device_runs_the_learned_rule_and_adapts_as_the_trainer(exported):
    run, bundle = exported
    cfg = EvalConfig(ways=4, shots=2, queries=3, episodes=30, seed=3)  # N = 4: the graphs' N is dynamic
    trainer, device = evaluate_path(run, None, cfg, "cpu", curve=True), evaluate_path(bundle, None, cfg, "cpu",
                                                                                       curve=True)
    assert device.steps == trainer.steps == [0, 1, 2, 3]
    for t, d in zip(trainer.results, device.results, strict=True):
        assert_equivalent(d.per_episode, t.per_episode, margin=0.005)  # paired, the same episodes
    assert trainer.results[-1].mean > trainer.results[0].mean  # the learned steps help


def test_the_device_state_threads_through_the_steps_and_lr_does_not_apply(exported, tmp_path):
    from mtl.device_runtime import Adapter, Bundle
    from mtl.device_runtime.adapter import default_lr, head_trajectory
    from mtl.pipeline.algorithms.meta_lstm import MetaLSTMLearner
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner

    run, path = exported
    bundle = Bundle.load(path)
    assert (bundle.manifest.rule, bundle.manifest.state) == ("lstm", 42)
    g = np.random.default_rng(0)
    features = g.normal(size=(6, bundle.feature_dim)).astype(np.float32)
    labels = np.repeat(np.arange(3), 2)
    *_, (weight, bias, _) = head_trajectory(bundle, features, labels, 3, bundle.manifest.steps, default_lr(bundle))
    learner = load_learner(load_checkpoint(run)).learner.eval()
    assert isinstance(learner, MetaLSTMLearner)
    p = {n: t.detach() for n, t in learner.named_parameters()}
    *_, fast = learner.head_trajectory(p, torch.from_numpy(features), torch.from_numpy(labels), 3,
                                       bundle.manifest.steps)
    assert_float_close(weight, fast["head.weight"].detach(), ulps=1024)
    assert_float_close(bias, fast["head.bias"].detach(), ulps=1024)
    adapter = Adapter(bundle)
    for c in range(2):
        adapter.add_examples(f"c{c}", g.normal(size=(2, 1, 28, 28)).astype(np.float32))
    with pytest.raises(ConfigError, match="learned update rule.*leave lr unset"):
        adapter.adapt(lr=0.1)
    assert adapter.adapt().steps == bundle.manifest.steps
    manifest = json.loads(bundle.manifest.to_json())
    for change, message in (({"learned_lr": True}, "learned_lr must be false"), ({"state": 0}, "adapt.state"),
                            ({"rule": "adam"}, "adapt.rule must be one of sgd, lstm")):
        broken = {**manifest, "adapt": {**manifest["adapt"], **change}}
        with pytest.raises(BundleError, match=message):
            type(bundle.manifest).from_dict(broken)


def test_trained_on_every_parameter_it_ships_its_rule_for_the_head(tmp_path):
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.errors import CheckpointError

    run = tmp_path / "all"
    meta_train(MetaTrainConfig(out=str(run), algorithm="meta-lstm", adapt="all", data="synthetic:30", ways=3,
                               shots=1, queries=2, meta_batch=2, inner_steps=1, iterations=2, val_every=2,
                               val_episodes=4, device="cpu", calibrate_episodes=0, backbone_options={"width": 8}))
    with pytest.raises(CheckpointError, match="--adapt head"):
        export_bundle(run, tmp_path / "refused.mtlb", single_file=True)
    from mtl.pipeline.algorithms.meta_lstm import MetaLSTMLearner
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner

    shipped = META_LSTM.deployable(load_learner(load_checkpoint(run)).learner, "head", run)
    assert isinstance(shipped, MetaLSTMLearner) and not shipped.spec.adapt == "all"  # the exporter's learner
    assert shipped.state_size == 42  # so adapt_step.onnx is the learned rule (exported: the device test above)
