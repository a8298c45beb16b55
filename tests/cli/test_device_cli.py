import json

import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from tests.device_runtime.bundle_factory import read_manifest, write_bundle, write_manifest, write_support
from tests.png_check import assert_drawn_png
from tests.tolerance import assert_float_close

runner = CliRunner()
CLASSES = ["circle", "square", "star"]


@pytest.fixture
def bundle(tmp_path):
    return write_bundle(tmp_path / "bundle")


@pytest.fixture
def adapted(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted"),
                                 "--steps", "10"])
    assert result.exit_code == 0, result.output
    return tmp_path / "adapted", support


def test_adapt_prints_the_classes_the_support_size_and_the_loss(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES, shots=2)
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted"),
                                 "--steps", "3", "--lr", "0.2"])
    assert result.exit_code == 0, result.output
    assert "classes (3): circle, square, star" in result.stdout
    assert "support: 6 images" in result.stdout
    assert "loss: 1.099 → " in result.stdout and "(3 steps, lr 0.2)" in result.stdout
    assert (tmp_path / "adapted" / "adapted.json").is_file()


def test_predict_json_gives_label_and_probabilities_per_image(adapted):
    out, support = adapted
    images = [support / name / "0.png" for name in CLASSES]
    result = runner.invoke(app, ["predict", str(out), *map(str, images), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["label"] for r in records] == CLASSES
    assert [r["image"] for r in records] == list(map(str, images))
    for record in records:
        assert set(record["probabilities"]) == set(CLASSES)
        assert record["probability"] == max(record["probabilities"].values())
        assert_float_close(sum(record["probabilities"].values()), 1.0)


def test_predict_prints_one_line_per_image(adapted):
    out, support = adapted
    result = runner.invoke(app, ["predict", str(out), str(support / "star" / "1.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("%)") and ": star (" in result.stdout


def test_output_lines_are_never_wrapped_nor_read_as_markup(bundle, tmp_path):
    """However long the paths (the terminal here is 80 columns) and whatever the class names, each image
    is one line, and a class folder named like rich markup is printed as it is."""
    classes = ["[b]draft", "circle", "star"]
    support = write_support(tmp_path / ("very-long-folder-name-" * 4) / "support", classes)
    out = tmp_path / "adapted"
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(out), "--steps", "5"])
    assert result.exit_code == 0, result.output
    assert f"classes (3): {', '.join(classes)}\n" in result.stdout and f"saved: {out}\n" in result.stdout
    images = [support / name / "1.png" for name in classes]
    result = runner.invoke(app, ["predict", str(out), *map(str, images)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) > 80 for line in lines)
    for line, image, name in zip(lines, images, classes, strict=True):
        assert line.startswith(f"{image}: {name} (") and line.endswith("%)")


def test_bundle_verify_says_ok_or_names_the_fault(bundle):
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")
    (bundle / "embed.onnx").write_bytes(b"tampered")
    result = runner.invoke(app, ["bundle", "verify", str(bundle)])
    assert result.exit_code == 1
    assert "embed.onnx: sha256" in result.output and "Traceback" not in result.output


def test_bundle_inspect_lists_fields_files_io_and_operators(bundle):
    result = runner.invoke(app, ["bundle", "inspect", str(bundle)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("mtl-bundle/3", "feature_dim", "linear, init learned", "init.npz", "adapt_step.onnx",
                 "lr_weight float32 [1, 8]", "log_probabilities float32 [B, N]", "loss float32 []",
                 "OneHot", "MatMul×2", "Softmax"):
        assert text in result.stdout, text


def test_a_support_dir_with_one_class_is_one_line_exit_1(bundle, tmp_path):
    support = write_support(tmp_path / "support", ["lonely"])
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted")])
    assert result.exit_code == 1
    assert "at least 2 classes" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "adapted").exists()


def test_an_empty_class_folder_is_named(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES[:2])
    (support / "empty").mkdir()
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted")])
    assert result.exit_code == 1 and "empty has no images" in result.output


def test_bad_options_are_usage_errors(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES[:2])
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "a"), "--lr", "-1"])
    assert result.exit_code == 2 and "lr must be" in result.output
    result = runner.invoke(app, ["adapt", str(bundle), str(support)])
    assert result.exit_code == 2 and "--out" in result.output


def test_predict_errors_name_the_culprit(adapted, tmp_path):
    out, _ = adapted
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "missing.png")])
    assert result.exit_code == 1 and "missing.png" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["predict", str(tmp_path), str(tmp_path / "missing.png")])
    assert result.exit_code == 1 and "not an adapted state" in result.output


def test_a_bad_schema_version_is_one_line(bundle):
    meta = read_manifest(bundle)
    meta["schema"] = "mtl-bundle/9"
    write_manifest(bundle, meta)
    result = runner.invoke(app, ["bundle", "inspect", str(bundle)])
    assert result.exit_code == 1 and "unsupported schema 'mtl-bundle/9'" in result.output


def test_help_lists_the_device_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ("adapt", "predict", "bundle"))
    result = runner.invoke(app, ["bundle", "--help"])
    assert result.exit_code == 0 and "verify" in result.output and "inspect" in result.output


def test_predict_show_draws_a_contact_sheet_and_still_prints_the_predictions(adapted, tmp_path):
    out, support = adapted
    images = [str(support / name / "1.png") for name in CLASSES]
    result = runner.invoke(app, ["predict", str(out), *images, "--show", str(tmp_path / "sheet.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in json.loads(result.stdout)] == CLASSES
    sheet = assert_drawn_png(tmp_path / "sheet.png", min_size=(2 * 144, 2 * 144))
    assert sheet.width == 2 * 144  # 3 images: 2 columns of 128-pixel thumbnails with 8-pixel margins


@pytest.mark.parametrize("target,culprit", [("sheet.jpg", "ending in .png"), ("adir.png", "is a directory")])
def test_predict_show_refuses_a_path_that_cannot_be_a_png(adapted, tmp_path, target, culprit):
    out, support = adapted
    (tmp_path / "adir.png").mkdir()
    image = str(support / "star" / "0.png")
    result = runner.invoke(app, ["predict", str(out), image, "--show", str(tmp_path / target)])
    assert result.exit_code == 2 and culprit in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_error_names_a_markup_like_folder_as_it_is(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    (support / "[red]cats").mkdir()
    result = runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "adapted")])
    assert result.exit_code == 1
    assert f"error: class folder {support / '[red]cats'} has no images" in result.output


def test_evaluate_runs_scores_a_bundle_on_lake_style_runs_without_torch(bundle, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from mtl.device_runtime.lake_runs import write_runs
    from tests.device_runtime.bundle_factory import glyph

    rng = np.random.default_rng(0)

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    runs = write_runs({f"a/c{c}": [png(glyph(c, rng)) for _ in range(2)] for c in range(4)}, tmp_path / "runs",
                      runs=3, ways=4)
    result = runner.invoke(app, ["evaluate", str(bundle), "--runs", str(runs), "--steps", "10", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["protocol"] == "lake2015-one-shot" and payload["runs"] == 3 and payload["accuracy"] == 1.0
    result = runner.invoke(app, ["evaluate", str(bundle), "--runs", str(runs)])
    assert result.exit_code == 0 and "4-way one-shot runs (Lake et al. 2015): 100.00%" in result.stdout
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--runs", str(runs)])
    assert result.exit_code == 2 and "export" in result.stderr
