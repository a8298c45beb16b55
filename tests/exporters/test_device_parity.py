"""The device runtime adapts exactly as the trainer does, and evaluates the same as the checkpoint."""

import numpy as np
import pytest
import torch

from mtl.device_runtime import Adapter, Bundle
from mtl.device_runtime.errors import DataError
from mtl.exporters.bundle_export import export_bundle
from mtl.exporters.deploy_model import deploy_model
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.tolerance import assert_equivalent, assert_float_close

EDGE = 2  # queries allowed to land in a neighbouring confidence bin by float rounding
FAST = dict(data="synthetic:60", ways=5, shots=1, queries=5, meta_batch=2, inner_steps=3, iterations=4, val_every=4,
            val_episodes=4, device="cpu", calibrate_episodes=5)


@pytest.fixture(scope="module", params=[("linear", "learned"), ("cosine", "proto"), ("linear", "proto")])
def mtl_bundle(request, tmp_path_factory, pretrained_run):
    head, head_init = request.param
    root = tmp_path_factory.mktemp(f"mtl-{head}-{head_init}")
    # uncalibrated: the trained 3 steps of 0.2, where float32 rounding cannot grow through the steps
    meta_train(MetaTrainConfig(out=str(root / "run"), algorithm="mtl", init=str(pretrained_run[0]), head=head,
                               head_init=head_init, inner_lr=0.2, **dict(FAST, calibrate_episodes=0)))
    export_bundle(root / "run", root / "bundle.mtlb", single_file=True)
    return root / "run", root / "bundle.mtlb"


def test_the_adapter_reaches_the_parameters_of_the_trainers_inner_adapt(mtl_bundle):
    run, bundle_path = mtl_bundle
    bundle = Bundle.load(bundle_path)
    g = np.random.default_rng(0)
    images = g.random((6, 1, 28, 28)).astype(np.float32)  # 3 classes × 2 examples, already normalised
    adapter = Adapter(bundle)
    for c in range(3):
        adapter.add_examples(f"class{c}", images[2 * c: 2 * c + 2])
    adapter.adapt()
    dm = deploy_model(load_checkpoint(run))
    with torch.no_grad():
        feats = dm.body(torch.from_numpy(images))
    labels = torch.arange(3).repeat_interleave(2)
    p = {n: t.detach() for n, t in dm.learner.named_parameters()}
    want = dm.learner.adapt(p, torch.from_numpy(images), labels, 3, bundle.manifest.steps,
                            first_order=True)
    assert feats.shape[1] == bundle.feature_dim
    weight, bias = adapter.head
    assert_float_close(weight, want["head.weight"])
    assert_float_close(bias, want["head.bias"])


def test_evaluating_the_bundle_agrees_with_the_checkpoint_on_the_same_episodes(mtl_bundle):
    run, bundle_path = mtl_bundle
    cfg = EvalConfig(ways=5, shots=1, queries=5, episodes=600)
    on_ckpt = evaluate_path(run, None, cfg, "cpu").result
    on_bundle = evaluate_path(bundle_path, None, cfg, "cpu").result
    assert on_bundle.method == "bundle" and on_ckpt.method == "adapt"
    assert_equivalent(on_bundle.per_episode, on_ckpt.per_episode, margin=0.005)


def test_a_pretrained_bundle_at_zero_steps_is_the_cosine_nearest_centroid_classifier(pretrained_run, tmp_path):
    from mtl.pipeline.train.common import embed
    from mtl.pipeline.train.evaluate import draw_episodes, held_out
    from mtl.pipeline.train.learners import load_learner

    export_bundle(pretrained_run[0], tmp_path / "b")
    cfg = EvalConfig(ways=5, shots=2, queries=5, episodes=200)
    bundle = evaluate_path(tmp_path / "b", None, cfg, "cpu", steps=0).result
    ckpt = load_checkpoint(pretrained_run[0])
    data, _ = held_out(ckpt.meta["config"]["data"], ckpt.meta["splits"], None)
    feats = embed(load_learner(ckpt).learner.body, data.images, data.spec, torch.device("cpu"))
    episodes = draw_episodes(data, cfg)
    means = feats[episodes.support].view(cfg.episodes, cfg.ways, cfg.shots, -1).mean(2)
    normalize = torch.nn.functional.normalize
    nearest = torch.einsum("eqd,end->eqn", normalize(feats[episodes.query], dim=-1),
                           normalize(means, dim=-1)).argmax(-1)
    by_hand = (nearest == torch.arange(cfg.ways).repeat_interleave(cfg.queries)).double().mean(-1)
    # W = μ/‖μ‖ (μ the mean of the raw features), b = 0: the cosine to each class mean, the same predictions up
    # to float ties
    assert_equivalent(bundle.per_episode, by_hand.tolist(), margin=0.005)


def test_a_pretrained_checkpoint_reports_what_its_bundle_does(pretrained_run, tmp_path):
    """`mtl evaluate CKPT` of a pretrained extractor is its device learner: the bundle's class-mean-initialised
    cosine head, its calibrated SGD steps and temperature, on the same episodes — accuracy and confidence."""
    assert "device" in load_checkpoint(pretrained_run[0]).meta  # pretraining ends with a calibration
    export_bundle(pretrained_run[0], tmp_path / "b")
    for shots in (1, 3):
        cfg = EvalConfig(ways=5, shots=shots, queries=5, episodes=200)
        on_ckpt = evaluate_path(pretrained_run[0], None, cfg, "cpu")
        on_bundle = evaluate_path(tmp_path / "b", None, cfg, "cpu")
        assert on_ckpt.steps == on_bundle.steps
        assert_equivalent(on_bundle.result.per_episode, on_ckpt.result.per_episode, margin=0.005)
        # the bundle reads predict.onnx's log-probabilities as the checkpoint's softmax(T(N, K) · logits): the same
        # reliability diagram, up to EDGE queries whose confidence sits on a bin edge within float rounding; each
        # such query moves the ECE by at most 2/N (it leaves one bin's term and joins another's)
        queries = cfg.episodes * cfg.ways * cfg.queries
        counts = [[b["count"] for b in r.result.reliability] for r in (on_bundle, on_ckpt)]
        np.testing.assert_allclose(*counts, rtol=0, atol=EDGE)
        np.testing.assert_allclose(on_bundle.result.ece, on_ckpt.result.ece, rtol=0, atol=2 * EDGE / queries)


@pytest.fixture(scope="module", params=["anil", "protonet"])
def batch_statistics_bundle(request, tmp_path_factory):
    """Episodic models whose extractor normalises with each batch's statistics (transductive BatchNorm)."""
    root = tmp_path_factory.mktemp(request.param)
    meta_train(MetaTrainConfig(out=str(root / "run"), algorithm=request.param, **FAST))
    export_bundle(root / "run", root / "bundle.mtlb", single_file=True)
    return request.param, root / "run", root / "bundle.mtlb"


def test_batch_statistics_bundles_evaluate_as_their_checkpoints(batch_statistics_bundle):
    _, run, bundle_path = batch_statistics_bundle
    assert Bundle.load(bundle_path).batch_statistics
    cfg = EvalConfig(ways=5, shots=1, queries=5, episodes=200)
    on_ckpt = evaluate_path(run, None, cfg, "cpu").result
    on_bundle = evaluate_path(bundle_path, None, cfg, "cpu").result
    assert_equivalent(on_bundle.per_episode, on_ckpt.per_episode, margin=0.005)


def test_the_adapter_embeds_a_batch_statistics_support_set_as_one_batch(batch_statistics_bundle, tmp_path):
    algorithm, run, bundle_path = batch_statistics_bundle
    images = np.random.default_rng(1).random((10, 1, 28, 28)).astype(np.float32)  # 5 classes × 2
    adapter = Adapter(Bundle.load(bundle_path))
    for c in range(4):
        adapter.add_examples(f"class{c}", images[2 * c: 2 * c + 2])
    adapter.adapt()
    adapter.save(tmp_path / "adapted")
    dm = deploy_model(load_checkpoint(run))
    p = {n: t.detach() for n, t in dm.learner.named_parameters()}
    labels = torch.arange(5).repeat_interleave(2)
    with torch.no_grad():  # the trainer's own maths on the whole support set, then on the query batch
        fast = dm.learner.adapt(p, torch.from_numpy(images), labels, 5, dm.steps, first_order=True)
        logits = dm.learner.predict(p, fast, torch.from_numpy(images[:6]))
        # the device reads probabilities at the calibrated temperature of a 5-way 2-shot task
        want = torch.softmax(dm.learner.head.temperature.at(5, 2) * logits, -1).numpy()
    reloaded = Adapter.load(tmp_path / "adapted")  # a class added after a reload changes every feature
    reloaded.add_examples("class4", images[8:])
    reloaded.adapt()
    weight, bias = reloaded.head
    # batch statistics: onnxruntime's and torch's mean/var over the batch round differently, and 1/σ amplifies it
    assert_float_close(weight, fast["head.weight"], ulps=1024, err_msg=algorithm)
    assert_float_close(bias, fast["head.bias"], ulps=1024, err_msg=algorithm)
    _, probs = reloaded.predict(images[:6])
    assert_float_close(probs, want, ulps=1024, err_msg=algorithm)
    with pytest.raises(DataError, match="batch statistics.*at least 2 images"):
        reloaded.predict(images[:1])


def test_meta_sgd_ships_its_learned_step_sizes_and_the_adapter_uses_them(tmp_path):
    meta_train(MetaTrainConfig(out=str(tmp_path / "run"), algorithm="metasgd", **FAST))
    export_bundle(tmp_path / "run", tmp_path / "b", adapt="head")
    bundle = Bundle.load(tmp_path / "b")
    dm = deploy_model(load_checkpoint(tmp_path / "run"), adapt="head")
    learned = dm.learner.inner_lrs["head__weight"].detach().numpy()
    assert bundle.manifest.learned_lr and np.array_equal(bundle.init["lr_weight"], learned)
    assert np.ptp(learned) > 0  # meta-training moved the step sizes apart: not a constant in disguise
    images = np.random.default_rng(2).random((6, 1, 28, 28)).astype(np.float32)
    adapter = Adapter(bundle)
    for c in range(3):
        adapter.add_examples(f"c{c}", images[2 * c: 2 * c + 2])
    adapter.adapt()
    p = {n: t.detach() for n, t in dm.learner.named_parameters()}
    with torch.no_grad():
        want = dm.learner.adapt(p, torch.from_numpy(images), torch.arange(3).repeat_interleave(2), 3, dm.steps,
                                first_order=True)
    assert_float_close(adapter.head[0], want["head.weight"])
    assert_float_close(adapter.head[1], want["head.bias"])
