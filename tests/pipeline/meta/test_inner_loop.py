import pytest
import torch
import torch.nn.functional as F

from mtl.pipeline.meta import batch as engine
from mtl.pipeline.meta.batch import Hyper, accumulate_meta_gradient, batch_outputs, query_metrics
from mtl.pipeline.meta.inner import inner_adapt, inner_step
from tests.pipeline.meta.tiny import tiny_batch, tiny_learner


def test_one_inner_step_changes_the_parameters_and_lowers_the_support_loss(batch):
    # proto init: with a symmetric head (learned/zero) the FIRST step cannot move the body at all
    learner = tiny_learner(head_init="proto")
    p = learner.state_params()
    sx, sy = batch.support[0], batch.support_labels[0]
    fast0 = {n: p[n] for n in learner.adaptable_body()}
    fast0.update(learner.init_head(p, learner.features(p, sx), sy, batch.n_way))

    def loss_fn(fast, x, y):
        return F.cross_entropy(learner.full_logits(p, fast, x), y)

    fast1, loss0 = inner_step(fast0, sx, sy, 0.3, loss_fn=loss_fn)
    # every weight moves (a conv bias right before BatchNorm has a zero gradient: BN removes it)
    assert all(not torch.equal(fast0[n], fast1[n]) for n in fast0 if n.endswith("weight"))
    assert loss_fn(fast1, sx, sy) < loss0


def test_more_inner_steps_keep_lowering_the_support_loss(batch):
    learner = tiny_learner(adapt="head")
    p = learner.state_params()
    feats = learner.features(p, batch.support[0])
    head = learner.init_head(p, feats, batch.support_labels[0], batch.n_way)

    def loss_fn(fast, f, y):
        return F.cross_entropy(learner.head_logits(p, fast, f), y)

    losses = [loss_fn(inner_adapt(head, feats, batch.support_labels[0], s, 0.5, loss_fn=loss_fn), feats,
                      batch.support_labels[0]) for s in (0, 1, 3, 10)]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))


def _meta_loss(learner, batch, steps, first_order=False):
    loss, _ = query_metrics(learner, batch_outputs(learner, learner.state_params(), batch, steps, first_order),
                            batch.query_labels)
    return loss.mean()


def test_second_order_meta_gradient_matches_finite_differences(batch):
    learner = tiny_learner()
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, Hyper(inner_steps=2, first_order=False))
    params = [p for p in learner.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    analytic = sum((p.grad * d).sum() for p, d in zip(params, direction, strict=True))
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
        plus = _meta_loss(learner, batch, 2)
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * eps * d)
        minus = _meta_loss(learner, batch, 2)
    numeric = (plus - minus) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)  # float64; central differences, h = 1e-5


def test_first_order_gradient_is_the_query_gradient_at_the_adapted_parameters(batch):
    """FOMAML: d L_q(θ') / dθ with dθ'/dθ treated as the identity (Finn et al. 2017, §5.2)."""
    learner = tiny_learner(adapt="head", head_init="zero")
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, Hyper(inner_steps=1, first_order=True))
    first_order = {n: t.grad.clone() for n, t in learner.named_parameters() if t.grad is not None}
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, Hyper(inner_steps=1, first_order=False))
    second_order = {n: t.grad.clone() for n, t in learner.named_parameters() if t.grad is not None}
    # By hand, for the body: the head after one step, detached from θ, then the query loss.
    p = learner.state_params()
    total = 0
    for b in range(len(batch)):
        feats = learner.features(p, batch.support[b])
        zero = learner.init_head(p, feats, batch.support_labels[b], batch.n_way)
        weight = zero["head.weight"].detach().requires_grad_()
        bias = zero["head.bias"].detach().requires_grad_()
        support_loss = F.cross_entropy(feats @ weight.T + bias, batch.support_labels[b])
        gw, gb = torch.autograd.grad(support_loss, (weight, bias))
        fast = {"head.weight": weight - 0.3 * gw.detach(), "head.bias": bias - 0.3 * gb.detach()}
        logits = learner.head_logits(p, fast, learner.features(p, batch.query[b]))
        total = total + F.cross_entropy(logits, batch.query_labels[b]) / len(batch)
    names = [n for n in first_order if n.startswith("body.")]
    expected = torch.autograd.grad(total, [learner.get_parameter(n) for n in names])
    for name, grad in zip(names, expected, strict=True):
        torch.testing.assert_close(first_order[name], grad, msg=name)
    assert any(not torch.allclose(first_order[n], second_order[n], atol=1e-6) for n in names)


def test_vmapped_meta_batch_equals_a_loop_over_tasks_and_chunks_equal_the_whole(batch):
    learner = tiny_learner()
    hp = Hyper(inner_steps=2)
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, hp)
    vmapped = {n: t.grad.clone() for n, t in learner.named_parameters()}
    learner.zero_grad()
    for b in range(len(batch)):  # the per-task loop the libraries use
        one = batch.part(slice(b, b + 1))
        (_meta_loss(learner, one, 2) / len(batch)).backward()
    for name, grad in vmapped.items():
        torch.testing.assert_close(grad, learner.get_parameter(name).grad, msg=name)
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, Hyper(inner_steps=2, chunk=2))
    for name, grad in vmapped.items():
        torch.testing.assert_close(grad, learner.get_parameter(name).grad, msg=name)


def test_a_head_adapts_to_more_classes_than_it_was_built_for():
    learner = tiny_learner(adapt="head", dtype=torch.float32)
    for ways in (2, 3, 7):
        wide = tiny_batch(tasks=2, ways=ways, dtype=torch.float32)
        outputs = batch_outputs(learner, learner.state_params(), wide, steps=3)
        assert outputs.shape == (2, ways * 2, ways)


def test_a_meta_batch_that_does_not_fit_is_chunked_automatically_with_the_same_gradient(batch, monkeypatch):
    learner = tiny_learner()
    hp = Hyper(inner_steps=2)
    learner.zero_grad()
    accumulate_meta_gradient(learner, batch, hp)
    whole = {n: t.grad.clone() for n, t in learner.named_parameters()}
    real = engine.batch_outputs

    def small_memory(learner, p, part, steps, first_order=False, task=None):
        if len(part) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(learner, p, part, steps, first_order, task)

    monkeypatch.setattr(engine, "batch_outputs", small_memory)
    metrics = engine.fitting_meta_gradient(learner, batch, hp)
    assert int(metrics["chunk"]) == 1
    for name, grad in whole.items():
        torch.testing.assert_close(grad, learner.get_parameter(name).grad, msg=name)


def test_a_meta_step_that_cannot_compile_warns_once_and_computes_the_same_gradient_eagerly(batch, monkeypatch):
    import torch._dynamo

    learner = tiny_learner()
    accumulate_meta_gradient(learner, batch, Hyper(inner_steps=2))
    eager = {n: t.grad.clone() for n, t in learner.named_parameters()}

    def broken(mode):
        def fail(*args, **kwargs):
            raise torch._dynamo.exc.Unsupported("no compiler here")
        return fail

    monkeypatch.setattr(engine, "compiled_losses", broken)
    monkeypatch.setattr(engine, "_COMPILE_FAILED", [])
    learner.zero_grad()
    with pytest.warns(RuntimeWarning, match="torch.compile of the meta-step failed"):
        accumulate_meta_gradient(learner, batch, Hyper(inner_steps=2, compile=True))
    for name, grad in eager.items():
        torch.testing.assert_close(grad, learner.get_parameter(name).grad, msg=name)
    assert len(engine._COMPILE_FAILED) == 1
