"""Sine-wave regression tasks (MAML §5.1) are seeded, in range, and exactly A·sin(x − φ)."""

import math

import pytest
import torch

from mtl.pipeline.data.sinusoid import SinusoidTasks
from mtl.pipeline.errors import ConfigError
from tests.tolerance import assert_float_close


def test_a_meta_batch_has_the_documented_shapes_and_dtypes():
    ep = SinusoidTasks(k_shot=5, q_query=7, meta_batch=3, seed=0).sample()
    assert ep.support.shape == ep.support_labels.shape == (3, 5, 1)
    assert ep.query.shape == ep.query_labels.shape == (3, 7, 1)
    assert ep.classes.shape == (3, 2)
    for t in (ep.support, ep.support_labels, ep.query, ep.query_labels, ep.classes):
        assert t.dtype == torch.float32
    assert ep.support_index.shape == ep.query_index.shape == (3, 0)
    assert ep.support_index.dtype == ep.query_index.dtype == torch.int64


def test_sample_takes_a_meta_batch_override():
    tasks = SinusoidTasks(k_shot=2, q_query=3, meta_batch=4)
    assert tasks.sample(9).support.shape == (9, 2, 1)
    assert tasks.sample().support.shape == (4, 2, 1)


def test_amplitudes_phases_and_inputs_lie_in_the_paper_ranges():
    ep = SinusoidTasks(k_shot=10, q_query=10, meta_batch=2000, seed=3).sample()
    amplitude, phase = ep.classes[:, 0], ep.classes[:, 1]
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5.0
    assert phase.min() >= 0.0 and phase.max() <= torch.tensor(math.pi)
    x = torch.cat([ep.support, ep.query], dim=1)
    assert x.min() >= -5.0 and x.max() <= 5.0
    # the draws cover their ranges, not a corner of them
    assert amplitude.min() < 0.3 and amplitude.max() > 4.8
    assert phase.min() < 0.1 and phase.max() > 3.0
    assert x.min() < -4.9 and x.max() > 4.9


def test_targets_are_exactly_the_sine_of_their_task():
    ep = SinusoidTasks(k_shot=4, q_query=6, meta_batch=8, seed=1).sample()
    amplitude, phase = ep.classes[:, 0, None, None], ep.classes[:, 1, None, None]
    assert torch.equal(ep.support_labels, amplitude * torch.sin(ep.support - phase))
    assert torch.equal(ep.query_labels, amplitude * torch.sin(ep.query - phase))
    a, p, x = (float(v) for v in (ep.classes[2, 0], ep.classes[2, 1], ep.query[2, 3, 0]))
    assert_float_close(ep.query_labels[2, 3, 0], a * math.sin(x - p), ulps=8)  # float32 against float64


def test_curve_evaluates_each_task_on_its_own_inputs():
    params = torch.tensor([[2.0, 0.0], [1.0, math.pi / 2]])
    x = torch.tensor([[[math.pi / 2], [0.0]], [[0.0], [math.pi / 2]]])
    y = SinusoidTasks.curve(params, x)
    torch.testing.assert_close(y, torch.tensor([[[2.0], [0.0]], [[-1.0], [0.0]]]))


def test_the_same_seed_draws_the_same_tasks_and_another_seed_does_not():
    a = SinusoidTasks(3, 3, meta_batch=5, seed=7).sample()
    b = SinusoidTasks(3, 3, meta_batch=5, seed=7).sample()
    c = SinusoidTasks(3, 3, meta_batch=5, seed=8).sample()
    assert torch.equal(a.classes, b.classes) and torch.equal(a.support, b.support)
    assert torch.equal(a.query_labels, b.query_labels)
    assert not torch.equal(a.classes, c.classes)


def test_successive_meta_batches_differ():
    tasks = SinusoidTasks(3, 3, meta_batch=5, seed=0)
    assert not torch.equal(tasks.sample().classes, tasks.sample().classes)


def test_restoring_the_state_continues_the_exact_task_stream():
    tasks = SinusoidTasks(2, 4, meta_batch=3, seed=11)
    tasks.sample()
    state = tasks.state_dict()
    expected = [tasks.sample() for _ in range(2)]
    resumed = SinusoidTasks(2, 4, meta_batch=3, seed=999)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.sample()
        assert torch.equal(got.classes, want.classes) and torch.equal(got.support, want.support)
        assert torch.equal(got.query, want.query)


@pytest.mark.parametrize(("kwargs", "culprit"), [
    ({"k_shot": 0, "q_query": 1}, "shots"),
    ({"k_shot": 1, "q_query": 0}, "queries"),
    ({"k_shot": 1, "q_query": 1, "meta_batch": 0}, "meta-batch"),
    ({"k_shot": True, "q_query": 1}, "shots"),
    ({"k_shot": 2.0, "q_query": 1}, "shots"),
])
def test_bad_shapes_raise_a_config_error_naming_the_culprit(kwargs, culprit):
    with pytest.raises(ConfigError, match=culprit):
        SinusoidTasks(**kwargs)


def test_a_bad_meta_batch_override_raises_a_config_error():
    with pytest.raises(ConfigError, match="meta-batch"):
        SinusoidTasks(1, 1).sample(0)
