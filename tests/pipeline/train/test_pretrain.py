import json

import pytest
import torch

from mtl.pipeline.atomic import read_jsonl
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from mtl.pipeline.train.pretrain import PretrainConfig, pretrain
from tests.conftest import SMALL
from tests.tolerance import assert_better


def test_pretraining_lowers_the_loss_and_writes_the_run_directory(pretrained_run):
    out, result = pretrained_run
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert records[-1]["train_loss"] < 0.6 * records[0]["train_loss"]
    assert records[-1]["lr"] < records[0]["lr"]  # cosine decay
    for name in ("config.json", "splits.json", "best.safetensors", "last.safetensors"):
        assert (out / name).is_file()
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits["train"]).isdisjoint(splits["test"]) and set(splits["val"]).isdisjoint(splits["test"])
    best = load_checkpoint(out)
    assert best.meta["best_val"] == pytest.approx(max(r["val_acc"] for r in records))
    assert best.optim == {}  # only `last` carries optimizer state
    assert load_checkpoint(out / "last.safetensors").optim


def test_pretrained_features_beat_chance_by_a_wide_margin_on_unseen_classes(pretrained_run):
    out, _ = pretrained_run
    ev = evaluate_path(out, None, EvalConfig(ways=5, shots=1, episodes=200, method="prototype"), "cpu")
    assert ev.classes.startswith("test split")
    assert ev.result.mean > 0.5  # chance is 0.2
    assert 0 < ev.result.ci95 < 0.05
    untrained = _untrained_accuracy(out)
    assert_better(ev.result.per_episode, untrained)  # paired: the same 200 episodes


def test_a_pretrained_checkpoint_is_evaluated_as_its_bundle_adapts(pretrained_run, tmp_path):
    """`auto` is the transfer learner a device gets: a cosine head at the class means, then the SGD steps its
    closing calibration chose; at 0 steps it predicts as its bundle does (paired, the same episodes)."""
    from mtl.exporters.bundle_export import export_bundle
    from tests.tolerance import assert_equivalent

    out, result = pretrained_run
    cfg = EvalConfig(ways=5, shots=1, episodes=100)
    auto = evaluate_path(out, None, cfg, "cpu")
    assert auto.result.method == "adapt" and auto.steps == [result.calibration.steps]
    zero = evaluate_path(out, None, cfg, "cpu", steps=0).result
    export_bundle(out, tmp_path / "b")
    on_bundle = evaluate_path(tmp_path / "b", None, cfg, "cpu", steps=0).result
    assert_equivalent(zero.per_episode, on_bundle.per_episode, margin=0.005)


def _untrained_accuracy(out):
    from mtl.pipeline.models import ModelSpec, build_model
    from mtl.pipeline.train.eval_backends import TorchBackend
    from mtl.pipeline.train.evaluate import evaluate, held_out
    from mtl.pipeline.train.learners import transfer_learner

    ckpt = load_checkpoint(out)
    torch.manual_seed(123)
    spec = ModelSpec.from_dict(ckpt.meta["model"])
    data, _ = held_out("synthetic:60", ckpt.meta["splits"], None)
    backend = TorchBackend(transfer_learner(spec, build_model(spec).backbone), torch.device("cpu"), "prototype")
    return evaluate(backend, data, EvalConfig(ways=5, shots=1, episodes=200), 0)[-1].per_episode


class Interrupt(Exception):
    pass


def _interrupt_at(kind, when):
    def on_step(k, done, total, info):
        if k == kind and when(done):
            raise Interrupt

    return on_step


def test_resume_after_an_interruption_gives_the_same_result_as_one_run(tmp_path):
    cfg = dict(SMALL, epochs=3, val_episodes=20)
    whole = pretrain(PretrainConfig(out=str(tmp_path / "whole"), **cfg))
    cut = str(tmp_path / "cut")
    with pytest.raises(Interrupt):  # dies after epoch 1 was saved
        pretrain(PretrainConfig(out=cut, **cfg), _interrupt_at("epoch", lambda d: d == 1))
    seen = {"epochs": 0}

    def mid_epoch(kind, done, total, info):  # dies in the middle of epoch 3
        seen["epochs"] += kind == "epoch"
        if kind == "batch" and seen["epochs"] == 1 and done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain(PretrainConfig(out=cut, resume=True, **cfg), mid_epoch)
    resumed = pretrain(PretrainConfig(out=cut, resume=True, **cfg))
    a, b = load_checkpoint(tmp_path / "whole" / "last.safetensors"), load_checkpoint(f"{cut}/last.safetensors")
    for name, tensor in a.model.items():
        assert torch.equal(tensor, b.model[name]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "whole/metrics.jsonl")) == strip(read_jsonl(f"{cut}/metrics.jsonl"))
    assert resumed.best_val_accuracy == whole.best_val_accuracy


def test_a_new_run_refuses_to_overwrite_and_resume_refuses_other_options(tmp_path, pretrained_run):
    out, _ = pretrained_run
    with pytest.raises(ConfigError, match="already holds a run"):
        pretrain(PretrainConfig(out=str(out), **SMALL))
    with pytest.raises(ConfigError, match="other options.*lr"):
        pretrain(PretrainConfig(out=str(out), resume=True, **dict(SMALL, lr=0.1)))
    with pytest.raises(ConfigError, match="no last.safetensors"):
        pretrain(PretrainConfig(out=str(tmp_path / "empty"), resume=True, **SMALL))


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(val_ways=1), dict(split=(0.5, 0.5))])
def test_out_of_range_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        PretrainConfig(**dict(SMALL, **bad))


def test_the_distillation_loss_is_cross_entropy_at_weight_0_and_temperature_scaled_kl_at_1():
    from mtl.pipeline.train.pretrain import _distill_loss
    from tests.tolerance import assert_float_close

    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert_float_close(_distill_loss(student, teacher, labels, PretrainConfig(distill_weight=0.0)), ce)
    t = 3.0
    p = torch.softmax(teacher / t, -1)
    kl = (p * (p.log() - torch.log_softmax(student / t, -1))).sum(-1).mean()  # KL(teacher ‖ student), per image
    cfg = PretrainConfig(distill_weight=1.0, distill_temperature=t)
    assert_float_close(_distill_loss(student, teacher, labels, cfg), t * t * kl, ulps=256)
    assert float(_distill_loss(teacher, teacher, labels, cfg)) == pytest.approx(0.0, abs=1e-6)


def test_a_student_learns_what_its_teacher_says_not_the_labels(tmp_path, pretrained_run):
    """A teacher whose head is rolled by one class predicts label + 1: a student distilled from it alone
    (weight 1) learns that map, while at weight 0 the teacher changes nothing (bit-identical to no teacher)."""
    from mtl.pipeline.train.checkpoint import Checkpoint, save_checkpoint

    out, _ = pretrained_run
    ckpt = load_checkpoint(out)
    rolled = {k: (v.roll(1, 0) if k.startswith("head.") else v) for k, v in ckpt.model.items()}
    (tmp_path / "liar").mkdir()
    save_checkpoint(tmp_path / "liar" / "best.safetensors", Checkpoint(ckpt.meta, rolled))
    cfg = dict(SMALL, epochs=3, calibrate_episodes=0)
    taught = pretrain(PretrainConfig(out=str(tmp_path / "taught"), teacher=str(tmp_path / "liar"),
                                     distill_weight=1.0, **cfg))
    plain = pretrain(PretrainConfig(out=str(tmp_path / "plain"), **cfg))
    pretrain(PretrainConfig(out=str(tmp_path / "ignored"), teacher=str(tmp_path / "liar"),
                           distill_weight=0.0, **cfg))
    assert plain.last["train_acc"] > 0.5 > 0.1 > taught.last["train_acc"]  # it answers label + 1 instead
    a, b = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "ignored")
    for name, tensor in a.model.items():
        assert torch.equal(tensor, b.model[name]), name


def test_a_teacher_of_other_classes_is_refused_before_the_run_directory_appears(tmp_path, pretrained_run):
    out, _ = pretrained_run
    with pytest.raises(ConfigError, match="other classes"):
        pretrain(PretrainConfig(out=str(tmp_path / "s"), teacher=str(out), **dict(SMALL, rotations=True)))
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="distill weight"):
        PretrainConfig(**dict(SMALL, distill_weight=1.5))


def test_train_classes_trains_a_nested_seeded_subset_and_records_it_as_the_split(tmp_path, pretrained_run):
    """--train-classes keeps N training classes — the first N of one seeded shuffle, so 4 ⊂ 8 — with validation and
    test unchanged; the run's split and its head say N; more than the split has is refused before any run exists."""
    full = json.loads((pretrained_run[0] / "splits.json").read_text())
    subsets = {}
    for n in (4, 8):
        out = tmp_path / f"n{n}"
        pretrain(PretrainConfig(out=str(out), train_classes=n, **dict(SMALL, epochs=1, calibrate_episodes=0)))
        subsets[n] = json.loads((out / "splits.json").read_text())
        assert len(subsets[n]["train"]) == n and set(subsets[n]["train"]) <= set(full["train"])
        assert [c for c in full["train"] if c in subsets[n]["train"]] == subsets[n]["train"]  # the split's order
        assert (subsets[n]["val"], subsets[n]["test"]) == (full["val"], full["test"])
        assert load_checkpoint(out).model["head.weight"].shape[0] == n
    assert set(subsets[4]["train"]) < set(subsets[8]["train"])
    with pytest.raises(ConfigError, match=f"only {len(full['train'])} classes"):
        pretrain(PretrainConfig(out=str(tmp_path / "big"), train_classes=len(full["train"]) + 1, **SMALL))
    assert not (tmp_path / "big").exists()
    for bad in (0, True):
        with pytest.raises(ConfigError, match="train-classes"):
            PretrainConfig(train_classes=bad, **SMALL)


def test_a_run_made_before_an_option_existed_resumes_as_that_options_default(tmp_path, pretrained_run):
    """A run directory written before `augment_elastic` and `train_classes` were options lacks them in its config and
    checkpoint: it ran as their defaults, so it resumes; a saved option that differs is still refused."""
    import shutil

    from mtl.pipeline.train.checkpoint import save_checkpoint

    old = tmp_path / "old"
    shutil.copytree(pretrained_run[0], old)
    added = ("augment_elastic", "train_classes")
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in added}))
    last = load_checkpoint(old / "last.safetensors")
    last.meta["config"] = {k: v for k, v in last.meta["config"].items() if k not in added}
    save_checkpoint(old / "last.safetensors", last)
    resumed = pretrain(PretrainConfig(out=str(old), resume=True, **SMALL))
    assert resumed.epochs == SMALL["epochs"]  # nothing left to train, nothing refused
    with pytest.raises(ConfigError, match="augment_elastic: 0.0 → 0.05"):
        pretrain(PretrainConfig(out=str(old), resume=True, **dict(SMALL, augment_elastic=0.05)))
