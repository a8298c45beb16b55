"""CAML (Zintgraf et al. 2019): the inner loop adapts only a per-task context vector that starts at 0; θ is the
outer loop's alone; FiLM starts as the identity at φ = 0; the device adapts φ through exported graphs exactly as the
trainer does."""

import numpy as np
import pytest
import torch

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.meta.batch import Hyper
from mtl.pipeline.meta.inner import inner_step
from mtl.pipeline.meta.learner import LearnerSpec
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
    fast, loss_fn = learner._problem(p, sy, batch.n_way)
    h = learner.context_prefix(p, sx)
    expected, loss = inner_step(fast, h, sy, 1.0, loss_fn=loss_fn)
    adapted = learner.adapt(p, sx, sy, batch.n_way, 1)
    assert_float_close(adapted["context"].detach(), expected["context"].detach(), dtype=np.float64)
    assert loss_fn(expected, h, sy) < loss  # the step lowers the support loss
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


@pytest.fixture(scope="module")
def caml_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("caml") / "run"
    meta_train(MetaTrainConfig(out=str(run), algorithm="caml", data="synthetic:30", ways=3, shots=2, queries=2,
                               meta_batch=2, inner_steps=2, inner_lr=2.0, iterations=2, val_every=2, val_episodes=4,
                               device="cpu", calibrate_episodes=0, backbone_options={"width": 8}))
    return run


@pytest.fixture(scope="module")
def caml_bundle(caml_run):
    from mtl.exporters.bundle_export import export_bundle

    return export_bundle(caml_run, caml_run.parent / "ctx.mtlb", single_file=True).path  # the context bundle


def test_the_device_adapts_the_context_exactly_as_the_trainer_does(caml_run, caml_bundle, tmp_path):
    from mtl.device_runtime import Adapter, Bundle
    from mtl.device_runtime.adapter import adapt_context
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.train.checkpoint import load_checkpoint
    from mtl.pipeline.train.learners import load_learner

    with pytest.raises(CheckpointError, match="never the extractor's weights"):
        export_bundle(caml_run, tmp_path / "refused.mtlb", single_file=True, adapt="all")
    bundle = Bundle.load(caml_bundle)
    assert bundle.context.dim == 100 and bundle.context.steps == 2 and bundle.manifest.steps == 0
    assert {"embed_prefix", "context_step", "embed_suffix"} <= set(bundle.graphs)
    learner = load_learner(load_checkpoint(caml_run)).learner.eval()
    p = learner.state_params()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 3
    for steps in (1, 2, 4):
        trainer = learner.adapt(p, x, y, 3, steps)["context"].detach()
        device, losses, features = adapt_context(bundle, x.numpy(), y.numpy(), 3, steps)
        assert len(losses) == steps and float(trainer.abs().max()) > 1e-4  # φ moved: the comparison means something
        assert_float_close(device, trainer, dtype=np.float32, ulps=256, err_msg=f"φ after {steps} step(s)")
        assert_float_close(features, learner.context_features(p, x, trainer).detach(), dtype=np.float32, ulps=256)
    at_zero = learner.context_features(p, x, torch.zeros(100)).detach()  # embed.onnx: the trained FiLM bias folded in
    assert_float_close(bundle.embed(x.numpy()), at_zero, dtype=np.float32, ulps=256)

    adapter = Adapter(bundle)  # the whole device path: add, adapt (context, then head), save, load, predict
    for c in range(3):
        adapter.add_examples(f"class{c}", x[y == c].numpy())
    result = adapter.adapt()
    assert result.context_steps == 2 and len(result.context_losses) == 2
    names, probs = adapter.predict(x.numpy())
    adapter.save(tmp_path / "adapted")
    again = Adapter.load(tmp_path / "adapted")
    assert_float_close(again.predict(x.numpy())[1], probs, dtype=np.float32)
    assert again.result.context_losses == result.context_losses
    with pytest.raises(Exception, match="context_steps must be"):
        adapter.adapt(context_steps=-1)


def test_the_context_bundle_scores_the_checkpoints_episodes_and_head_only_still_exports(caml_run, caml_bundle,
                                                                                       tmp_path):
    from mtl.exporters.bundle_export import export_bundle
    from mtl.pipeline.errors import ConfigError
    from tests.tolerance import assert_equivalent

    cfg = EvalConfig(ways=3, shots=2, queries=3, episodes=12, seed=1)
    device = evaluate_path(caml_bundle, None, cfg, "cpu").result
    trainer = evaluate_path(caml_run, None, cfg, "cpu").result
    assert_equivalent(device.per_episode, trainer.per_episode, margin=0.005)  # paired, same episodes
    with pytest.raises(ConfigError, match="--context-steps is for a bundle"):
        evaluate_path(caml_run, None, EvalConfig(ways=3, shots=2, episodes=2, context_steps=0), "cpu")
    with pytest.raises(ConfigError, match="--quantize"):
        export_bundle(caml_run, tmp_path / "q.mtlb", single_file=True, quantize="int8")
    head = export_bundle(caml_run, tmp_path / "head.mtlb", single_file=True, adapt="head").path
    assert 0 <= evaluate_path(head, None, cfg, "cpu").result.mean <= 1


def test_a_manifest_whose_context_and_graphs_disagree_is_refused_in_one_line(caml_bundle):
    import json
    import zipfile

    from mtl.device_runtime.errors import BundleError
    from mtl.device_runtime.manifest import Manifest

    good = json.loads(zipfile.ZipFile(caml_bundle).read("manifest.json"))
    assert json.loads(Manifest.from_dict(good).to_json()) == good
    cases = {"unknown graph": lambda m: m.pop("context"), "context.dim": lambda m: m["context"].update(dim=0),
             "context.hidden": lambda m: m["context"].update(hidden=[64, "7"]),
             "graphs.context_step": lambda m: m["graphs"].pop("context_step"),
             "context.lr": lambda m: m["context"].update(lr=-1.0)}
    for message, edit in cases.items():
        bad = json.loads(json.dumps(good))
        edit(bad)
        with pytest.raises(BundleError, match=message.replace(".", r"\.")) as info:
            Manifest.from_dict(bad)
        assert "\n" not in str(info.value)


def test_the_context_step_benchmark_prints_both_sides_and_their_ratio(caml_bundle):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "benchmarks/context_step.py", "--bundle", caml_bundle, "--quick", "--json"],
                         cwd=repo, capture_output=True, text=True, timeout=300, check=True).stdout
    (row,) = json.loads(out)["results"]
    assert row["ours"]["context_step_ms"] > 0 and row["baseline"]["head_step_ms"] > 0
    assert row["ratio"]["step"] == row["ours"]["context_step_ms"] / row["baseline"]["head_step_ms"]
