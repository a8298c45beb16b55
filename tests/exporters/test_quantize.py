"""`mtl export --quantize int8`: a smaller, faster extractor that classifies as the float one does."""

import json

import onnx
import pytest

from mtl.device_runtime import Bundle
from mtl.exporters.bundle_export import export_bundle
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path
from tests.tolerance import assert_no_worse


def test_an_int8_bundle_is_standard_onnx_smaller_and_as_accurate(pretrained_run, tmp_path):
    float_report = export_bundle(pretrained_run[0], tmp_path / "f32")
    report = export_bundle(pretrained_run[0], tmp_path / "int8", quantize="int8")
    embed = onnx.load(tmp_path / "int8" / "embed.onnx")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in embed.graph.node}
    assert {o.domain for o in embed.opset_import} <= {"", "ai.onnx"}
    assert report.files["embed.onnx"] < 0.4 * float_report.files["embed.onnx"]  # int8 weights
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["quantization"]["embed"] == "int8"
    assert manifest["quantization"]["calibration"] == {"data": "synthetic:60", "images": 256}
    assert manifest["quantization"]["check"]["min_cosine"] >= 0.99
    assert Bundle.load(tmp_path / "int8").manifest.quantization["check"]["images"] == 64
    cfg = EvalConfig(ways=5, shots=1, queries=5, episodes=300)
    on_float = evaluate_path(tmp_path / "f32", None, cfg, "cpu").result
    on_int8 = evaluate_path(tmp_path / "int8", None, cfg, "cpu").result
    # the claim is one-sided: int8 loses at most a point against float on the same episodes (gaining is fine)
    assert_no_worse(on_int8.per_episode, on_float.per_episode, margin=0.01)


def test_an_unknown_quantization_is_refused_before_anything_is_written(pretrained_run, tmp_path):
    with pytest.raises(ConfigError, match="--quantize must be one of int8"):
        export_bundle(pretrained_run[0], tmp_path / "b", quantize="int4")
    assert not (tmp_path / "b").exists()
