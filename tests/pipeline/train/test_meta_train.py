import pytest
import torch

from mtl.pipeline.atomic import read_jsonl
from mtl.pipeline.errors import CheckpointError, ConfigError
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.pipeline.train.resume import assert_resumes_exactly
from tests.tolerance import assert_better

FAST = dict(data="synthetic:60", ways=5, shots=1, queries=5, meta_batch=4, inner_steps=2, val_every=10,
            val_episodes=20, device="cpu", calibrate_episodes=0)


def test_short_maml_beats_the_untrained_model_on_held_out_classes(tmp_path):
    cfg = MetaTrainConfig(out=str(tmp_path / "maml"), algorithm="maml", iterations=60, outer_lr=3e-3,
                          **dict(FAST, val_every=30))
    meta_train(cfg)
    eval_cfg = EvalConfig(ways=5, shots=1, queries=5, episodes=150)
    trained = evaluate_path(tmp_path / "maml", None, eval_cfg, "cpu").result
    ckpt = load_checkpoint(tmp_path / "maml")
    torch.manual_seed(cfg.seed)  # the same initialisation meta-training started from
    untrained = MetaLearner(LearnerSpec.from_dict(ckpt.meta["learner"]))
    from mtl.pipeline.train.eval_backends import TorchBackend
    from mtl.pipeline.train.evaluate import evaluate, held_out

    data, _ = held_out("synthetic:60", ckpt.meta["splits"], None)
    before = evaluate(TorchBackend(untrained, torch.device("cpu")), data, eval_cfg, 2)[-1]
    assert trained.method == "adapt"
    assert_better(trained.per_episode, before.per_episode)  # paired: the same 150 episodes


def test_mtl_leaves_the_pretrained_extractor_untouched_and_learns_scale_and_shift(tmp_path, pretrained_run):
    pre, _ = pretrained_run
    out = tmp_path / "mtl"
    meta_train(MetaTrainConfig(out=str(out), algorithm="mtl", init=str(pre), iterations=10, hard_tasks=True,
                               **FAST))
    pretrained = load_checkpoint(pre / "best.safetensors").model
    learned = load_checkpoint(out / "last.safetensors").model
    frozen = [k for k in pretrained if k.startswith("backbone.")]
    assert frozen
    for key in frozen:  # conv weights now live inside the scale/shift wrapper
        name = "body." + key[len("backbone."):]
        match = learned.get(name, learned.get(name.replace(".weight", ".conv.weight").replace(".bias", ".conv.bias")))
        assert match is not None, key
        assert torch.equal(match, pretrained[key]), key
    scales = [k for k in learned if k.endswith(".scale")]
    assert scales and any(not torch.equal(learned[k], torch.ones_like(learned[k])) for k in scales)


def test_mtl_without_init_and_init_from_a_meta_checkpoint_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs --init"):
        MetaTrainConfig(algorithm="mtl", **FAST)
    out = tmp_path / "maml"
    meta_train(MetaTrainConfig(out=str(out), iterations=1, **FAST))
    with pytest.raises(CheckpointError, match="must come from `mtl pretrain`"):
        meta_train(MetaTrainConfig(out=str(tmp_path / "x"), algorithm="mtl", init=str(out), **FAST))


def test_resume_continues_exactly(tmp_path):
    assert_resumes_exactly(dict(FAST, algorithm="metasgd", iterations=20), tmp_path, stop_at=13)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 2


@pytest.mark.parametrize("bad", [dict(algorithm="joint", options={"beta": 1.5}),
                                 dict(algorithm="joint", options={"meta-learner": "sgd"}),
                                 dict(options={"beta": 0.5}), dict(adapt="some"),
                                 dict(inner_lr=0.0), dict(iterations=0), dict(algorithm="bogus"),
                                 dict(max_cpu_seconds=0.0), dict(max_cpu_seconds=float("inf")),
                                 dict(max_cpu_seconds=1.0, nproc=2, meta_batch=4)])
def test_bad_meta_train_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        MetaTrainConfig(**dict(FAST, **bad))


def test_metrics_rows_record_the_outer_learning_rate_for_reports(tmp_path):
    meta_train(MetaTrainConfig(out=str(tmp_path / "m"), algorithm="anil", first_order=True, iterations=2, outer_lr=2e-3,
                               **dict(FAST, val_every=1, meta_batch=1, val_episodes=2)))
    records = read_jsonl(tmp_path / "m" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == [pytest.approx(2e-3)] * 2


@pytest.mark.parametrize("budget", ["max_seconds", "max_cpu_seconds"])
def test_a_time_budget_stops_training_validated_and_checkpointed(tmp_path, budget):
    """A budget far below what 10 000 iterations take stops the loop early, with the last iteration validated,
    logged (its CPU time beside its wall time) and saved as the run's last and best checkpoint."""
    out = tmp_path / budget
    result = meta_train(MetaTrainConfig(out=str(out), algorithm="protonet", iterations=10_000,
                                        **dict(FAST, val_every=10_000, **{budget: 0.5})))
    records = read_jsonl(out / "metrics.jsonl")
    assert 1 <= result.iterations < 10_000
    assert [r["iteration"] for r in records] == [result.iterations]
    clock = records[-1]["cpu_seconds" if budget == "max_cpu_seconds" else "seconds"]
    assert clock >= 0.5
    assert load_checkpoint(out / "last.safetensors").meta["iteration"] == result.iterations
    assert (out / "best.safetensors").is_file()
