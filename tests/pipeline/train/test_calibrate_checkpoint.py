"""`mtl calibrate` and the calibration that ends every pretraining run: device settings chosen on validation
classes, written into the checkpoint, applied wherever the checkpoint is loaded — and by its bundle."""

import shutil

import numpy as np
import pytest
import torch

from mtl.device_runtime import Adapter, Bundle
from mtl.device_runtime.calibration import softmax_at
from mtl.exporters.bundle_export import export_bundle
from mtl.pipeline.train.calibrate import LOG_LOSS_TIE, LR_GRID, STEP_GRID, TIE, calibrate_checkpoint, choose
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.learners import load_learner
from tests.tolerance import assert_float_close


@pytest.fixture(scope="module")
def calibrated(pretrained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("calibrate") / "run"
    shutil.copytree(pretrained_run[0], run)
    file, result = calibrate_checkpoint(run, episodes=100, seed=3, device="cpu")
    return run, file, result


def test_the_chosen_steps_and_lr_have_the_lowest_log_loss_of_the_most_accurate_on_validation(calibrated):
    _, _, result = calibrated
    assert result.searched and set(result.table) == set(result.log_loss) == {str(lr) for lr in LR_GRID}
    assert all(set(curve) == set(STEP_GRID) for table in (result.table, result.log_loss) for curve in table.values())
    best = max(max(curve.values()) for curve in result.table.values())
    assert result.table[str(result.lr)][result.steps] >= best - TIE  # among the most accurate
    eligible = [(result.log_loss[lr][k], k) for lr, curve in result.table.items() for k, a in curve.items()
                if a >= best - TIE]
    lowest = min(loss for loss, _ in eligible)
    chosen = result.log_loss[str(result.lr)][result.steps]
    assert chosen <= lowest * (1 + LOG_LOSS_TIE)  # the lowest log-loss, or tied with it ...
    assert all(k >= result.steps for loss, k in eligible if loss <= lowest * (1 + LOG_LOSS_TIE))  # ... fewest steps
    assert result.ece_after <= result.ece_before  # fitted on these episodes: never worse than T = 1


@pytest.mark.parametrize(("candidates", "want"), [
    ([(0.98, 0.060, 0, 0.1), (0.981, 0.055, 10, 0.3), (0.99, 0.070, 40, 1.0)], (40, 1.0)),  # accuracy first
    ([(0.98, 0.060, 0, 0.1), (0.9805, 0.055, 10, 0.3), (0.9801, 0.050, 40, 1.0)], (40, 1.0)),  # then log-loss
    ([(0.98, 0.0600, 0, 0.1), (0.9805, 0.0599, 10, 0.3)], (0, 0.1)),  # a log-loss tie: fewer steps
])
def test_choosing_takes_accuracy_then_log_loss_then_fewer_steps(candidates, want):
    assert choose(candidates) == want


def test_the_settings_are_written_into_the_checkpoint_and_applied_by_load_learner(calibrated):
    _, file, result = calibrated
    ckpt = load_checkpoint(file)
    assert ckpt.meta["device"]["steps"] == result.steps and ckpt.meta["device"]["lr"] == result.lr
    loaded = load_learner(ckpt)
    assert loaded.steps == result.steps and loaded.learner.spec.inner_lr == result.lr
    assert loaded.learner.head.temperature == result.temperature


def test_calibrating_again_calibrates_what_was_trained_not_the_previous_calibration(calibrated):
    run, file, result = calibrated
    _, again = calibrate_checkpoint(run, episodes=100, seed=3, device="cpu")
    assert (again.steps, again.lr) == (result.steps, result.lr)
    assert again.temperature.at(5, 1) == pytest.approx(result.temperature.at(5, 1), rel=1e-6)


def test_the_bundle_carries_the_temperature_and_the_adapter_applies_it(calibrated, tmp_path):
    run, _, result = calibrated
    export_bundle(run, tmp_path / "b")
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.manifest.calibration == result.temperature and bundle.manifest.steps == result.steps
    g = np.random.default_rng(0)
    images = g.random((9, 1, 28, 28)).astype(np.float32)  # 3 classes × 3 examples, already normalised
    adapter = Adapter(bundle)
    for c in range(3):
        adapter.add_examples(f"c{c}", images[3 * c: 3 * c + 3])
    adapter.adapt()
    _, probs = adapter.predict(images)
    weight, bias = adapter.head
    raw = bundle.predict_log_proba(weight, bias, bundle.embed(images))
    assert_float_close(probs, softmax_at(raw, result.temperature.at(3, 3)), ulps=256)
    assert_float_close(probs.sum(1), np.ones(9))


def test_a_torch_learner_reports_tempered_confidences(calibrated):
    """The checkpoint's confidence is softmax(T(N, K) · logits) of its own logits."""
    from mtl.pipeline.train.eval_backends import TorchBackend
    from mtl.pipeline.train.evaluate import EvalConfig, draw_episodes, held_out

    _, file, result = calibrated
    ckpt = load_checkpoint(file)
    learner = load_learner(ckpt).learner
    data, _ = held_out(ckpt.meta["config"]["data"], ckpt.meta["splits"], None)
    cfg = EvalConfig(ways=5, shots=2, queries=5, episodes=20)
    scores = TorchBackend(learner, torch.device("cpu")).scores(draw_episodes(data, cfg), [result.steps],
                                                                lambda *a: None)
    want = torch.softmax(result.temperature.at(5, 2) * scores.logits.double(), -1).max(-1).values
    assert_float_close(scores.confidence, want)


def test_the_open_set_thresholds_lose_the_chosen_share_of_validation_knowns_and_ship_in_the_bundle(calibrated,
                                                                                                  tmp_path):
    from mtl.device_runtime import open_set
    from mtl.device_runtime.preprocess import normalize
    from mtl.device_runtime.schema import BACKGROUND
    from mtl.pipeline.train.calibrate import KNOWN_LOSS, producer_classes, validation_classes

    run, file, _ = calibrated
    ckpt = load_checkpoint(file)
    section = ckpt.meta["device"]["open_set"]
    assert section["known_loss"] == KNOWN_LOSS and set(section["thresholds"]) == {"1", "5"}
    export_bundle(run, tmp_path / "b")
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.manifest.open_set["thresholds"] == section["thresholds"]
    # the background is the unit mean of every training class's features, as the device embeds them
    train = producer_classes(ckpt, ("train",))["train"]
    background = bundle.init[BACKGROUND]
    assert section["background"] == train.num_classes and background.shape == (train.num_classes, bundle.feature_dim)
    train_features = bundle.embed(normalize(train.images.numpy(), bundle.input_spec))
    means = open_set.prototypes(train_features, train.labels().numpy(), train.num_classes)
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(background, means, rtol=0, atol=64 * eps)  # float32 features, torch vs onnxruntime
    # on fresh validation episodes through the device runtime, about KNOWN_LOSS of the knowns fall below it
    val, rng = validation_classes(ckpt), np.random.default_rng(11)
    features = bundle.embed(normalize(val.images.numpy(), bundle.input_spec))
    lost = []
    for _ in range(200):
        classes = rng.choice(val.num_classes, 5, replace=False)
        rows = [int(val.offsets[c]) + rng.permutation(int(val.counts[c])) for c in classes]
        protos = open_set.prototypes(features[np.concatenate([r[:1] for r in rows])], np.arange(5), 5)
        scores = open_set.scores(features[np.concatenate([r[1:11] for r in rows])], protos, background)
        lost.append(float((scores < section["thresholds"]["1"]).mean()))
    share, ci = float(np.mean(lost)), 1.96 * float(np.std(lost, ddof=1)) / np.sqrt(len(lost))
    assert abs(share - KNOWN_LOSS) < ci + 0.02, (share, ci)
