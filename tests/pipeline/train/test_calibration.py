"""Expected calibration error (15 bins) of top-1 probabilities, as `mtl evaluate` reports it."""

import pytest
import torch

from mtl.pipeline.train.evaluate import calibration


def test_probabilities_that_come_true_as_often_as_they_say_have_a_small_ece():
    g = torch.Generator().manual_seed(0)
    confidence = torch.rand(200_000, generator=g) * 0.9 + 0.1
    correct = torch.rand(200_000, generator=g) < confidence  # right exactly as often as claimed
    measured = calibration(confidence, correct)
    assert measured["ece"] < 0.01
    assert sum(b["count"] for b in measured["bins"]) == 200_000 and len(measured["bins"]) == 15


def test_always_certain_and_right_half_the_time_is_an_ece_of_one_half():
    confidence = torch.ones(1000)
    correct = torch.arange(1000) % 2 == 0
    measured = calibration(confidence, correct)
    assert measured["ece"] == pytest.approx(0.5)
    assert measured["bins"][-1] == {"confidence": 1.0, "accuracy": 0.5, "count": 1000}


# ---- temperature scaling: the law T(N, K), its fit, and how the device applies it

import math  # noqa: E402

import numpy as np  # noqa: E402

from mtl.device_runtime.calibration import Temperature, softmax_at  # noqa: E402
from mtl.pipeline.train.calibrate import fit_temperature  # noqa: E402


@pytest.mark.parametrize("scale", [8.0, 2000.0])
def test_the_device_gets_softmax_of_scaled_logits_from_log_probabilities(scale):
    """scale 2000: logits of a confident one-shot head, whose float32 probabilities underflow to 0 for every class
    but one — a sharpening temperature (T = 0.02) still sees their differences in the log-probabilities."""
    g = torch.Generator().manual_seed(0)
    logits = scale * torch.randn(50, 7, generator=g, dtype=torch.float64)
    for t in (0.02, 0.2, 1.0, 3.7):
        want = torch.softmax(t * logits, -1).numpy()
        got = softmax_at(torch.log_softmax(logits, -1).float().numpy(), t)
        # float32 log-probabilities in: T · log p is off by a few ulps of |T log p| ≤ 2T·max|z|, which is the
        # relative error of each probability; float32 out (its tiniest values flush to 0)
        eps = float(np.finfo(np.float32).eps)
        rtol = 4 * eps * (1 + 2 * t * float(logits.abs().max()))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=float(np.finfo(np.float32).tiny))
        assert np.isfinite(got).all()
    if scale > 1000:
        probs = torch.softmax(logits, -1).float()
        assert (probs == 0).sum() > 0.5 * probs.numel()  # what /2's probabilities would have handed the device


def test_the_temperature_law_clamps_to_the_calibrated_range():
    law = Temperature(math.log(2.0), 0.5, 1.0, ways=(5, 20), shots=(1, 5))
    assert law.at(5, 1) == pytest.approx(2.0 * math.sqrt(5))
    assert law.at(20, 5) == pytest.approx(2.0 * math.sqrt(20) * 5)
    assert law.at(100, 50) == law.at(20, 5) and law.at(2, 0.5) == law.at(5, 1)
    assert Temperature().identity and Temperature().at(37, 9) == 1.0
    assert Temperature.from_dict(law.to_dict()) == law


def test_fitting_recovers_the_temperature_law_that_drew_the_labels():
    """Labels drawn from softmax(T(N, K)·z): maximum likelihood finds T's coefficients again."""
    truth = Temperature(math.log(1.5), 0.3, 0.6, ways=(5, 20), shots=(1, 5))
    g = torch.Generator().manual_seed(1)
    groups = []
    for ways in (5, 20):
        for shots in (1, 5):
            logits = 2 * torch.randn(20_000, ways, generator=g, dtype=torch.float64)
            probs = torch.softmax(truth.at(ways, shots) * logits, -1)
            groups.append((logits, torch.multinomial(probs, 1, generator=g).squeeze(1), ways, shots))
    fitted = fit_temperature(groups)
    assert (fitted.ways, fitted.shots) == ((5.0, 20.0), (1.0, 5.0))
    for ways in (5, 20):
        for shots in (1, 5):  # each T within 3 % (80 000 draws: the statistical error is about 1 %)
            assert fitted.at(ways, shots) == pytest.approx(truth.at(ways, shots), rel=0.03)


def test_one_episode_shape_fits_a_constant_temperature():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(20_000, 5, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(0.5 * logits, -1), 1, generator=g).squeeze(1)
    fitted = fit_temperature([(logits, labels, 5, 1)])
    assert fitted.per_log_ways == fitted.per_log_shots == 0.0
    assert fitted.at(5, 1) == pytest.approx(0.5, rel=0.05)
