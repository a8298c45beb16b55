import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mtl.exporters.bundle_export import export_bundle
from mtl.exporters.deploy_model import deploy_model
from mtl.exporters.graphs import adapt_step_fn
from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.meta.inner import inner_adapt
from mtl.pipeline.train.checkpoint import load_checkpoint
from mtl.pipeline.train.meta_train import MetaTrainConfig, meta_train
from tests.tolerance import assert_float_close, float_tolerance

FAST = dict(data="synthetic:60", ways=5, shots=1, queries=5, meta_batch=2, inner_steps=2, iterations=2, val_every=2,
            val_episodes=4, device="cpu", calibrate_episodes=0)


@pytest.fixture(scope="module")
def mtl_run(tmp_path_factory, pretrained_run):
    out = tmp_path_factory.mktemp("mtl") / "run"
    meta_train(MetaTrainConfig(out=str(out), algorithm="mtl", init=str(pretrained_run[0]), **FAST))
    return out


def test_a_pretrained_checkpoint_exports_a_checked_bundle_with_hashes(pretrained_run, tmp_path):
    report = export_bundle(pretrained_run[0], tmp_path / "bundle")
    bundle = tmp_path / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema"] == "mtl-bundle/3" and manifest["head"] == {"type": "cosine", "init": "proto"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    for name in ("embed", "init_head", "adapt_step", "predict"):
        model = onnx.load(bundle / f"{name}.onnx")
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded into the convs
        assert [i.name for i in model.graph.input] == [i["name"] for i in manifest["graphs"][name]["inputs"]]
    assert max(report.parity.values()) < float_tolerance(ulps=1024)["rtol"]  # relative to each output's scale
    assert sum(report.files.values()) < 1_000_000  # a Conv-4 bundle fits in 1 MB


def test_mtl_bundle_folds_scale_and_shift_and_keeps_the_learned_head(mtl_run, tmp_path):
    out = export_bundle(mtl_run, tmp_path / "mtl.mtlb", single_file=True).path
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        embed = onnx.load_from_string(zf.read("embed.onnx"))
        init_head = ort.InferenceSession(zf.read("init_head.onnx"))
    assert manifest["head"]["init"] == "learned" and manifest["producer"]["algorithm"] == "mtl"
    assert "Mul" not in {n.op_type for n in embed.graph.node}  # the scale is inside the conv weights
    learner = deploy_model(load_checkpoint(mtl_run)).learner
    onehot = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]
    weight, bias = init_head.run(None, {"features": np.ones((5, manifest["feature_dim"]), np.float32),
                                        "onehot": onehot})
    assert weight.shape == (4, manifest["feature_dim"])  # the learned vector, once per class of this task
    assert_float_close(weight, learner.head.init_weight.detach().expand(4, -1))
    assert_float_close(bias, learner.head.init_bias.detach().expand(4))


@pytest.mark.parametrize("ways,examples", [(2, 4), (7, 21)])
def test_k_onnx_steps_match_the_trainers_inner_adapt(mtl_run, tmp_path, ways, examples):
    report = export_bundle(mtl_run, tmp_path / "b")
    dm = deploy_model(load_checkpoint(mtl_run))
    session = ort.InferenceSession(str(tmp_path / "b" / "adapt_step.onnx"))
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(examples, dm.feature_dim, generator=g)
    labels = torch.arange(examples) % ways
    p = {n: t.detach() for n, t in dm.learner.named_parameters()}
    head = dm.learner.init_head(p, feats, labels, ways)
    lr = {"head.weight": torch.full((1, dm.feature_dim), 0.3), "head.bias": torch.full((1,), 0.3)}

    def loss_fn(fast, f, y):
        return dm.learner.task_loss(dm.learner.head_logits(p, fast, f), y)

    want = inner_adapt(head, feats, labels, 5, lr, loss_fn=loss_fn, first_order=True)
    w, b = head["head.weight"].numpy(), head["head.bias"].numpy()
    for _ in range(5):
        w, b, _ = session.run(None, {"weight": w, "bias": b, "features": feats.numpy(), "labels": labels.numpy(),
                                     "lr_weight": lr["head.weight"].numpy(), "lr_bias": lr["head.bias"].numpy()})
    assert_float_close(w, want["head.weight"])
    assert_float_close(b, want["head.bias"])
    assert report.parity["adapt_step.new_weight"] < float_tolerance(ulps=64)["rtol"]
    assert adapt_step_fn(dm)  # the graph came from the same inner_step


def test_a_body_adapting_checkpoint_is_refused_with_the_reason_and_ships_frozen_on_request(tmp_path):
    out = tmp_path / "maml"
    meta_train(MetaTrainConfig(out=str(out), algorithm="maml", **FAST))
    with pytest.raises(CheckpointError, match="adapted the body.*--adapt head"):
        export_bundle(out, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    report = export_bundle(out, tmp_path / "b", adapt="head")  # MAML's transductive BatchNorm ships as is
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["batch_statistics"] is True and manifest["producer"]["algorithm"] == "maml"
    # the batch statistics of a second batch size agree too
    assert report.parity["embed.features"] < float_tolerance(ulps=1024)["rtol"]
    embed = onnx.load(tmp_path / "b" / "embed.onnx")
    assert "ReduceMean" in {n.op_type for n in embed.graph.node}  # statistics computed from the batch


def test_export_never_replaces_an_unrelated_directory_and_replaces_its_own(pretrained_run, tmp_path):
    from mtl.pipeline.errors import ConfigError

    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        export_bundle(pretrained_run[0], precious)
    assert (precious / "holiday.jpg").read_bytes() == b"keep me"
    export_bundle(pretrained_run[0], tmp_path / "b")
    export_bundle(pretrained_run[0], tmp_path / "b")  # a second export replaces the first whole
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        ["manifest.json", "embed.onnx", "init_head.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"])


def test_two_exports_of_one_checkpoint_are_byte_identical_and_the_device_rewrites_the_same_zip(pretrained_run,
                                                                                               tmp_path):
    from mtl.device_runtime import Bundle

    first = Path(export_bundle(pretrained_run[0], tmp_path / "a.mtlb", single_file=True).path).read_bytes()
    second = Path(export_bundle(pretrained_run[0], tmp_path / "b.mtlb", single_file=True).path).read_bytes()
    assert first == second
    export_bundle(pretrained_run[0], tmp_path / "dir")
    with zipfile.ZipFile(tmp_path / "a.mtlb") as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {p.name: p.read_bytes() for p in (tmp_path / "dir").iterdir()}
        assert zf.namelist()[0] == "manifest.json"
    assert Bundle.load(tmp_path / "a.mtlb").to_zip_bytes() == first  # one zip writer: the adapted state's copy too
