"""Siamese networks (Koch et al. 2015): a weighted-L1 twin trained on same/different pairs verifies better with
training, classifies one-shot by the most similar support image, and does the same on the device."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.algorithms.siamese import SiameseOptions, distort, pair_logits, pair_loss, verification_auc
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.pipeline.meta.tiny import tiny_batch, tiny_learner
from tests.tolerance import assert_equivalent, assert_float_close

SIAMESE = get_algorithm("siamese")


def siamese_learner(**overrides):
    return tiny_learner(head="siamese", head_init="proto", adapt="head", **overrides)


def test_one_shot_classification_is_the_most_similar_support_image():
    learner, batch = siamese_learner(), tiny_batch(shots=1, queries=3)
    p = learner.state_params()
    with torch.no_grad():
        for b in range(len(batch)):
            sx, sy, qx, qy = batch.support[b], batch.support_labels[b], batch.query[b], batch.query_labels[b]
            logits = SIAMESE.task_outputs(learner, p, sx, sy, qx, batch.n_way, 5, True)
            fq, fs = learner.body(qx), learner.body(sx)
            alpha, beta = learner.head.l1_weight, learner.head.l1_bias
            by_hand = torch.stack([torch.stack([(alpha * (q - s).abs()).sum() + beta for s in fs[sy.argsort()]])
                                   for q in fq])  # the paper's weighted L1 distance, pair by pair
            assert_float_close(logits, by_hand, dtype=np.float64)
            similarity, same = pair_logits(learner, p, sx, sy, qx, qy)
            assert torch.equal(logits.argmax(-1), sy[similarity.argmax(-1)])
            assert torch.equal(same, qy[:, None] == sy[None, :])


def test_the_pair_loss_weighs_same_and_different_pairs_equally():
    same = torch.tensor([[True, False, False, False]])
    assert_float_close(pair_loss(torch.zeros(1, 1, 4), same[None]), torch.tensor(math.log(2.0)), dtype=np.float32)
    confident = torch.tensor([[[5.0, -5.0, -5.0, -5.0]]])
    wrong_positive = torch.tensor([[[-5.0, -5.0, -5.0, -5.0]]])
    wrong_negative = torch.tensor([[[5.0, 5.0, -5.0, -5.0]]])
    # one wrong positive costs as much as all negatives wrong: each kind is half the loss
    assert pair_loss(confident, same[None]) < 0.01
    assert_float_close(pair_loss(wrong_positive, same[None]) - pair_loss(confident, same[None]),
                       3 * (pair_loss(wrong_negative, same[None]) - pair_loss(confident, same[None])),
                       dtype=np.float32, ulps=64)


def test_verification_auc_counts_ties_half():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0])
    same = torch.tensor([True, False, True, False, False])
    assert verification_auc(scores, same) == pytest.approx(5.5 / 6)
    with pytest.raises(ValueError, match="same and different"):
        verification_auc(scores, torch.ones(5, dtype=torch.bool))


def test_distortions_are_a_function_of_the_episode():
    batch = tiny_batch(dtype=torch.float32)
    once, again = distort(batch, SiameseOptions()), distort(batch, SiameseOptions())
    assert torch.equal(once.support, again.support) and torch.equal(once.query, again.query)  # resumes exactly
    assert not torch.allclose(once.support, batch.support)
    other = dataclasses.replace(batch, classes=batch.classes.flip(0))
    assert not torch.equal(distort(other, SiameseOptions()).support, once.support)
    assert distort(batch, SiameseOptions(distort=False)) is batch
    with pytest.raises(ConfigError, match="shear must be in"):
        SIAMESE.parse_options({"shear": "1.5"})


def held_out_auc(learner, batch):
    with torch.no_grad():
        p = learner.state_params()
        pairs = [pair_logits(learner, p, batch.support[b], batch.support_labels[b], batch.query[b],
                             batch.query_labels[b]) for b in range(len(batch))]
    return verification_auc(torch.cat([s.flatten() for s, _ in pairs]), torch.cat([m.flatten() for _, m in pairs]))


SMALL = dict(data="synthetic:60", ways=5, shots=1, queries=5, meta_batch=4, iterations=30, outer_lr=3e-3,
             val_every=30, val_episodes=20, device="cpu", calibrate_episodes=0, backbone_options={"width": 16})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("siamese") / "run"
    meta_train(MetaTrainConfig(out=str(run), algorithm="siamese", **SMALL))
    return run


def test_verification_auc_rises_with_training_on_classes_never_trained_on(trained):
    from mtl.pipeline.data import load_data
    from mtl.pipeline.data.splits import Splits
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner
    from mtl.pipeline.train.tasks import ImageTasks

    ckpt = load_checkpoint(trained)
    data = load_data(SMALL["data"])
    test = data.subset(Splits.from_dict(ckpt.meta["splits"]).indices(data, "test"))
    held_out = ImageTasks(test, 5, 1, 5, meta_batch=32, seed=7).sample()
    learner = load_learner(ckpt).learner
    torch.manual_seed(0)  # the run's own initialisation (seed 0), before any step
    untrained = SIAMESE.build(learner.spec)
    before, after = held_out_auc(untrained, held_out), held_out_auc(learner, held_out)
    assert after > before + 0.05, (before, after)  # 32 episodes × 125 pairs: the AUC's s.e. is about 0.01


def test_a_trained_siamese_network_exports_and_the_device_classifies_as_torch_does(trained, tmp_path):
    from mtl.exporters.bundle_export import export_bundle

    run = trained
    bundle = export_bundle(run, tmp_path / "siamese.mtlb", single_file=True).path
    cfg = EvalConfig(ways=5, shots=1, queries=5, episodes=40, seed=3)
    torch_eval, device_eval = evaluate_path(run, None, cfg, "cpu"), evaluate_path(bundle, None, cfg, "cpu")
    assert torch_eval.steps == device_eval.steps == [0]  # the paper's rule by default: no steps
    torch_side, device_side = torch_eval.result, device_eval.result
    assert torch_side.mean > 0.5  # it learned something (chance is 0.2)
    assert_equivalent(device_side.per_episode, torch_side.per_episode, margin=0.005)  # paired, same episodes
