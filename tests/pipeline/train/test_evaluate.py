import pytest
import torch

from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.meta.heads import class_means, prototype_logits
from mtl.pipeline.train.common import mean_ci95
from mtl.pipeline.train.eval_backends import finetune_logits
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path


def clustered_features(episodes=8, ways=5, shots=3, queries=4, dim=16, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(episodes, ways, 1, dim, generator=g) * 3
    support = (centres + noise * torch.randn(episodes, ways, shots, dim, generator=g)).reshape(episodes, -1, dim)
    query = (centres + noise * torch.randn(episodes, ways, queries, dim, generator=g)).reshape(episodes, -1, dim)
    labels = torch.arange(ways).repeat_interleave(queries)
    return support, query, labels


@pytest.mark.parametrize("method", ["prototype", "finetune"])
def test_both_methods_classify_well_separated_clusters(method):
    support, query, labels = clustered_features()
    if method == "prototype":
        means = torch.stack([class_means(s, torch.arange(5).repeat_interleave(3), 5) for s in support])
        logits = prototype_logits(query, means)
    else:
        logits = finetune_logits(support, query, 5, steps=100, lr=0.01)
    assert logits.shape == (8, 20, 5)
    assert (logits.argmax(-1) == labels).float().mean() > 0.95


def test_prototype_logits_are_negative_squared_distances_to_class_means():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])  # 2-way 2-shot
    query = torch.tensor([[1.0, 0.0]])
    logits = prototype_logits(query, class_means(support, torch.tensor([0, 0, 1, 1]), 2))
    torch.testing.assert_close(logits, torch.tensor([[-0.0, -(1.0 + 25.0)]]))


def test_confidence_interval_is_196_sigma_over_root_n():
    values = torch.tensor([0.0, 1.0, 0.0, 1.0])
    mean, ci = mean_ci95(values)
    assert mean == 0.5 and ci == pytest.approx(1.96 * values.std().item() / 2)


def test_the_same_seed_gives_the_same_accuracy_and_another_seed_other_episodes(pretrained_run):
    out, _ = pretrained_run
    cfg = EvalConfig(ways=5, shots=1, episodes=60)
    a = evaluate_path(out, None, cfg, "cpu").result
    b = evaluate_path(out, None, cfg, "cpu").result
    c = evaluate_path(out, None, EvalConfig(ways=5, shots=1, episodes=60, seed=1), "cpu").result
    assert a == b and a.per_episode == b.per_episode and a.per_episode != c.per_episode


def test_finetune_evaluation_runs_on_a_checkpoint(pretrained_run):
    out, _ = pretrained_run
    r = evaluate_path(out, None, EvalConfig(ways=5, shots=5, episodes=40, method="finetune"), "cpu")
    assert r.result.method == "finetune" and r.result.mean > 0.5


def test_missing_or_foreign_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate_path(tmp_path / "nope.safetensors", None, EvalConfig(), "cpu")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        evaluate_path(junk, None, EvalConfig(), "cpu")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        evaluate_path(tmp_path, None, EvalConfig(), "cpu")


@pytest.mark.parametrize("bad", [dict(ways=1), dict(shots=0), dict(episodes=0), dict(method="knn")])
def test_bad_evaluation_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        EvalConfig(**bad)
