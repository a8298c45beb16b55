"""Every bad input of issue 6, driven through the `mtl` CLI: one line on stderr naming the culprit, a non-zero
exit, no traceback, and nothing written (or the previous output left byte for byte as it was).

Each parametrised id is one distinct bad input; `tests/cli`, `tests/device_runtime` and `tests/pipeline` test
the same checks at the function level.
"""

import hashlib
import io
import json
import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from tests.device_runtime.bundle_factory import read_manifest, replace_file, write_bundle, write_manifest, write_support

runner = CliRunner()
CLASSES = ["circle", "square", "star"]


def fails_cleanly(args: list[str], culprit: str, code: int = 1):
    """Run `mtl args`; assert exit `code`, one stderr line that names `culprit`, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (hidden temporaries included), to prove nothing changed."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, classes: int, per_class: int, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True)
        for i in range(per_class):
            (root / f"class{c:02d}" / f"{i}.png").write_bytes(png(rng.integers(0, 255, (size, size), np.uint8)))
    return root


# ---------------------------------------------------------------- data
def _truncated(path: Path) -> None:
    data = png(np.full((40, 40), 7, np.uint8))
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "truncated-png": _truncated,
    "text-named-png": lambda p: p.write_text("this is not an image\n"),
    "zero-bytes": lambda p: p.write_bytes(b""),
    "16-bit-png": lambda p: p.write_bytes(png(np.full((20, 20), 40000, np.uint16))),
    "float-tiff": lambda p: Image.fromarray(np.ones((20, 20), np.float32)).save(p.with_suffix(".tif")),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_an_unreadable_image_is_named_and_no_run_is_created(kind, tmp_path):
    data = image_folder(tmp_path / "data", classes=6, per_class=4)
    bad = data / "class03" / "bad.png"
    BAD_FILES[kind](bad)
    bad = bad if bad.exists() else bad.with_suffix(".tif")
    line = fails_cleanly(["pretrain", "--data", f"folder:{data}", "--out", str(tmp_path / "run"), "--epochs", "1",
                          "--device", "cpu", "-q"], str(bad))
    if kind in ("16-bit-png", "float-tiff"):
        assert "8-bit" in line  # refused, not silently clipped to white, and says why
    assert not (tmp_path / "run").exists()


def test_images_of_other_modes_and_sizes_are_converted_not_refused(tmp_path):
    from pipeline.data import load_data

    data = image_folder(tmp_path / "data", classes=2, per_class=1)
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[..., 3] = 255
    (data / "class00" / "rgba.png").write_bytes(png(rgba))
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P").save(data / "class01" / "p.png")
    Image.fromarray(np.zeros((9, 9), bool)).save(data / "class01" / "bilevel.png")
    loaded = load_data(f"folder:{data}", image_size=16)
    assert loaded.images.shape == (5, 3, 16, 16) and loaded.spec.channels == 3


@pytest.mark.parametrize("case", ["missing", "empty", "no-images", "unknown-scheme", "synthetic-1", "no-path"])
def test_a_bad_data_spec_or_path_is_named(case, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-images" / "a").mkdir(parents=True)
    (tmp_path / "no-images" / "a" / "notes.txt").write_text("x")
    spec, culprit, code = {
        "missing": (f"folder:{tmp_path / 'missing'}", str(tmp_path / "missing"), 1),
        "empty": (f"folder:{tmp_path / 'empty'}", str(tmp_path / "empty"), 1),
        "no-images": (f"folder:{tmp_path / 'no-images'}", str(tmp_path / "no-images"), 1),
        "unknown-scheme": ("imagenet-22k:/data", "imagenet-22k", 2),
        "synthetic-1": ("synthetic:1", "at least 2 classes", 2),
        "no-path": ("omniglot:", "needs a path", 2),
    }[case]
    fails_cleanly(["pretrain", "--data", spec, "--out", str(tmp_path / "run"), "--device", "cpu", "-q"], culprit, code)
    assert not (tmp_path / "run").exists()


def test_a_class_with_fewer_images_than_shots_plus_queries_is_named(tmp_path):
    data = image_folder(tmp_path / "data", classes=10, per_class=3)
    fails_cleanly(["meta-train", "--data", f"folder:{data}", "--ways", "2", "--shots", "1", "--queries", "5",
                   "--iterations", "1", "--out", str(tmp_path / "run"), "--device", "cpu", "-q"],
                  "has 3 images, but 1 shots + 5 queries need 6")
    assert not (tmp_path / "run").exists()


def test_fewer_classes_than_ways_says_how_many(tmp_path):
    fails_cleanly(["meta-train", "--data", "synthetic:10", "--ways", "8", "--iterations", "1",
                   "--out", str(tmp_path / "run"), "--device", "cpu", "-q"], "8-way episodes need 8 classes")
    assert not (tmp_path / "run").exists()


def test_a_validation_split_too_small_for_pretraining_fails_before_training(tmp_path):
    data = image_folder(tmp_path / "data", classes=30, per_class=5)
    fails_cleanly(["pretrain", "--data", f"folder:{data}", "--out", str(tmp_path / "run"), "--device", "cpu", "-q"],
                  "1 shots + 15 queries need 16")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- options
META = ["meta-train", "--data", "synthetic:20", "--iterations", "1", "--device", "cpu", "-q"]


@pytest.mark.parametrize("flag, value, culprit", [
    ("--ways", "1", "ways must be at least 2"),
    ("--shots", "0", "shots must be at least 1"),
    ("--queries", "0", "queries must be at least 1"),
    ("--inner-steps", "0", "inner steps"),
    ("--iterations", "0", "iterations"),
    ("--meta-batch", "0", "meta-batch"),
    ("--inner-lr", "-1", "learning rates must be positive"),
    ("--inner-lr", "inf", "learning rates must be positive and finite"),
    ("--outer-lr", "nan", "learning rates must be positive"),
    ("--beta", "1.5", "--beta must be in [0, 1]"),
    ("--beta", "nan", "--beta must be in [0, 1]"),
    ("--chunk", "-1", "--chunk must be ≥ 0"),
])
def test_meta_train_options_out_of_range_are_usage_errors(flag, value, culprit, tmp_path):
    fails_cleanly([*META, flag, value, "--out", str(tmp_path / "run")], culprit, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--epochs", "0"], "epochs"), (["--batch-size", "0"], "batch size"), (["--lr", "0"], "lr > 0"),
    (["--lr", "inf"], "lr > 0"), (["--image-size", "4"], "at least 8 pixels"),
])
def test_pretrain_options_out_of_range_are_usage_errors(args, culprit, tmp_path):
    fails_cleanly(["pretrain", "--data", "synthetic:20", *args, "--out", str(tmp_path / "run"), "--device", "cpu",
                   "-q"], culprit, code=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--ways", "1"], "ways must be at least 2"), (["--episodes", "0"], "episodes must be at least 1"),
    (["--steps", "-1"], "--steps must be ≥ 0"), (["--queries", "0"], "queries must be at least 1"),
])
def test_evaluate_options_out_of_range_are_usage_errors(args, culprit, pretrained_run):
    out, _ = pretrained_run
    fails_cleanly(["evaluate", str(out), *args, "--device", "cpu", "-q"], culprit, code=2)


def test_resume_with_other_options_is_refused_and_the_run_is_untouched(pretrained_run):
    out, _ = pretrained_run
    before = snapshot(out)
    fails_cleanly(["pretrain", "--data", "synthetic:60", "--epochs", "6", "--batch-size", "64", "--lr", "0.1",
                   "--out", str(out), "--device", "cpu", "--resume", "-q"], "lr: 0.05 → 0.1", code=2)
    assert snapshot(out) == before


def test_resume_of_a_checkpoint_copied_from_another_run_is_refused(pretrained_run, tmp_path):
    from pipeline.atomic import atomic_write_json
    from pipeline.errors import ConfigError
    from pipeline.train.pretrain import PretrainConfig, pretrain
    from tests.conftest import SMALL

    run = tmp_path / "run"
    shutil.copytree(pretrained_run[0], run)
    config = json.loads((run / "config.json").read_text())
    atomic_write_json(run / "config.json", {**config, "lr": 0.2})  # config.json says lr 0.2, the checkpoint 0.05
    before = snapshot(run)

    with pytest.raises(ConfigError, match=r"last.safetensors was made with other options \(lr: 0.05 → 0.2\)"):
        pretrain(PretrainConfig(out=str(run), resume=True, **dict(SMALL, lr=0.2)))
    assert snapshot(run) == before


def _other_backbone_checkpoint(pretrained_run, tmp_path) -> Path:
    """The pretrained conv4 tensors under metadata that says resnet12: the model built does not fit them."""
    from pipeline.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(pretrained_run[0] / "best.safetensors")
    ckpt.meta["model"] = {**ckpt.meta["model"], "backbone": "resnet12", "options": {"channels": [8, 8, 8, 8]}}
    ckpt.meta["config"] = {**ckpt.meta["config"], "backbone": "resnet12"}
    save_checkpoint(tmp_path / "other.safetensors", ckpt)
    return tmp_path / "other.safetensors"


@pytest.mark.parametrize("command", ["evaluate", "export", "meta-train --init"])
def test_a_checkpoint_from_a_different_backbone_is_named(command, pretrained_run, tmp_path):
    path = _other_backbone_checkpoint(pretrained_run, tmp_path)
    out = tmp_path / "out"
    args = {"evaluate": ["evaluate", str(path), "--episodes", "5", "--device", "cpu", "-q"],
            "export": ["export", str(path), "--out", str(out)],
            "meta-train --init": ["meta-train", "--data", "synthetic:60", "--iterations", "1", "--device", "cpu",
                                  "-q", "--algorithm", "mtl", "--init", str(path), "--backbone", "resnet12",
                                  "--out", str(out)]}[command]
    line = fails_cleanly(args, "do not fit")
    assert ("other.safetensors" in line) or ("--init" in line)
    assert not out.exists()


def test_meta_train_init_from_another_backbone_is_a_usage_error(pretrained_run, tmp_path):
    fails_cleanly([*META, "--algorithm", "mtl", "--init", str(pretrained_run[0]), "--backbone", "resnet12",
                   "--out", str(tmp_path / "run")], "holds a conv4 backbone but --backbone is resnet12", code=2)


def test_a_truncated_checkpoint_is_named(pretrained_run, tmp_path):
    path = tmp_path / "cut.safetensors"
    data = (pretrained_run[0] / "best.safetensors").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    fails_cleanly(["evaluate", str(path), "--device", "cpu", "-q"], "cut.safetensors is not a safetensors checkpoint")


# ---------------------------------------------------------------- bundles
@pytest.fixture
def bundle(tmp_path):
    return write_bundle(tmp_path / "bundle")


def _flip(bundle: Path, name: str, at: float) -> None:
    data = bytearray((bundle / name).read_bytes())
    data[int(at * (len(data) - 1))] ^= 0x01
    (bundle / name).write_bytes(bytes(data))


def _edit(change):
    def apply(bundle: Path) -> None:
        meta = read_manifest(bundle)
        change(meta)
        write_manifest(bundle, meta)

    return apply


def _swap_graph_input(bundle: Path) -> None:
    from tests.device_runtime.bundle_factory import embed_graph, projection

    replace_file(bundle, "embed.onnx", embed_graph(projection(), input_name="pixels"))


BUNDLE_FAULTS = {
    "missing-file": (lambda b: (b / "predict.onnx").unlink(), "missing file predict.onnx"),
    "missing-manifest": (lambda b: (b / "manifest.json").unlink(), "missing file manifest.json"),
    **{f"flipped-byte-{name}-{at}": ((lambda b, n=name, a=at: _flip(b, n, a)), f"{name}: sha256")
       for name in ("embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz") for at in (0.0, 0.5, 1.0)},
    "manifest-not-json": (lambda b: (b / "manifest.json").write_text("{schema"), "manifest.json is not valid JSON"),
    "manifest-not-object": (lambda b: (b / "manifest.json").write_text("[1, 2]"), "must hold a JSON object"),
    "missing-key-feature_dim": (_edit(lambda m: m.pop("feature_dim")), "missing key 'feature_dim'"),
    "missing-key-files": (_edit(lambda m: m.pop("files")), "missing key 'files'"),
    "missing-key-input.std": (_edit(lambda m: m["input"].pop("std")), "missing key 'input.std'"),
    "unknown-schema": (_edit(lambda m: m.update(schema="mtl-bundle/2")), "unsupported schema 'mtl-bundle/2'"),
    "wrong-type-feature_dim": (_edit(lambda m: m.update(feature_dim="8")), "feature_dim must be an integer"),
    "wrong-type-lr": (_edit(lambda m: m["adapt"].update(lr=[0.1])), "adapt.lr must be a number"),
    "wrong-type-bool-as-int": (_edit(lambda m: m.update(opset=True)), "opset must be an integer"),
    "bad-digest": (_edit(lambda m: m["files"].update({"init.npz": "abc"})), "files.init.npz must be a lower-case"),
    "unsafe-file-name": (_edit(lambda m: m["graphs"]["embed"].update(file="../embed.onnx")), "unsafe file name"),
    "onnx-not-onnx": (lambda b: replace_file(b, "embed.onnx", b"\x08\x07not a model at all"), "embed.onnx: not an"),
    "onnx-inputs-differ": (_swap_graph_input, "embed.onnx: graph inputs ['pixels'] do not match"),
    "npz-with-pickle": (lambda b: replace_file(b, "init.npz", _pickled_npz()), "init.npz: not a readable .npz"),
}


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, head_weight=np.array([{"evil": 1}], dtype=object), head_bias=np.zeros(()))
    return buffer.getvalue()


@pytest.mark.parametrize("fault", BUNDLE_FAULTS)
def test_a_broken_bundle_is_refused_naming_the_fault(fault, bundle):
    damage, culprit = BUNDLE_FAULTS[fault]
    damage(bundle)
    fails_cleanly(["bundle", "verify", str(bundle)], culprit)


def test_a_missing_bundle_is_named(tmp_path):
    fails_cleanly(["bundle", "verify", str(tmp_path / "nowhere.mtlb")], "nowhere.mtlb does not exist")


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, which is the point
        for name, data in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


ZIP_FAULTS = {
    "absolute-path": (lambda m: m + [("/tmp/evil.txt", b"x")], "unsafe file name '/tmp/evil.txt'"),
    "dot-dot-path": (lambda m: m + [("../evil.txt", b"x")], "unsafe file name '../evil.txt'"),
    "nested-dot-dot": (lambda m: m + [("a/../../evil.txt", b"x")], "unsafe file name"),
    "backslash-path": (lambda m: m + [("..\\evil.txt", b"x")], "unsafe file name"),
    "symlink": (lambda m: m + [(_symlink("link"), b"/etc/passwd")], "member link is a symbolic link"),
    "duplicate-name": (lambda m: m + [m[1]], "duplicate member embed.onnx"),
    "zip-bomb": (lambda m: m + [("pad.bin", bytes(64 << 20))], "refusing a possible zip bomb"),
    "not-a-zip": (lambda m: None, "not a valid .mtlb zip"),
}


@pytest.mark.parametrize("fault", ZIP_FAULTS)
def test_an_unsafe_mtlb_is_refused_before_anything_is_decompressed(fault, bundle, tmp_path, monkeypatch):
    names = ["manifest.json", "embed.onnx", "adapt_step.onnx", "predict.onnx", "init.npz"]
    members = [(name, (bundle / name).read_bytes()) for name in names]
    change, culprit = ZIP_FAULTS[fault]
    entries = change(members)
    path = tmp_path / "bad.mtlb"
    path.write_bytes(b"PK\x03\x04 not really" if entries is None else _zip(entries))
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or pytest.fail("decompressed"))
    before = sorted(p.name for p in tmp_path.iterdir())
    fails_cleanly(["bundle", "verify", str(path)], culprit)
    assert opened == [] and sorted(p.name for p in tmp_path.iterdir()) == before  # nothing read, nothing extracted


def test_verification_happens_before_any_graph_reaches_onnxruntime(bundle, monkeypatch):
    import device_runtime.bundle as bundle_module

    sessions = []
    real = bundle_module.ort.InferenceSession
    monkeypatch.setattr(bundle_module.ort, "InferenceSession", lambda *a, **k: sessions.append(1) or real(*a, **k))
    _flip(bundle, "predict.onnx", 0.5)  # the LAST graph: the first two must not have been loaded either
    fails_cleanly(["bundle", "verify", str(bundle)], "predict.onnx: sha256")
    assert sessions == []
    write_bundle(bundle)
    assert runner.invoke(app, ["bundle", "verify", str(bundle)]).exit_code == 0 and len(sessions) == 3


# ---------------------------------------------------------------- device adaptation
def _adapt(bundle: Path, support: Path, out: Path, *extra: str) -> list[str]:
    return ["adapt", str(bundle), str(support), "--out", str(out), *extra]


@pytest.mark.parametrize("case, culprit", [
    ("missing-dir", "does not exist"), ("no-classes", "has no class sub-folders"), ("empty-class", "has no images"),
    ("one-class", "at least 2 classes, got 1 ('circle')"), ("case-duplicates", "differ only in case"),
    ("unreadable-image", "cannot read image"),
])
def test_a_bad_support_folder_is_named_and_nothing_is_written(case, culprit, bundle, tmp_path):
    support = tmp_path / "support"
    if case != "missing-dir":
        support.mkdir()
    if case in ("empty-class", "unreadable-image", "case-duplicates"):
        write_support(support, CLASSES[:2])
    if case == "empty-class":
        (support / "empty").mkdir()
    if case == "one-class":
        write_support(support, CLASSES[:1])
    if case == "case-duplicates":
        write_support(support, ["Circle"])
    if case == "unreadable-image":
        (support / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    fails_cleanly(_adapt(bundle, support, tmp_path / "adapted"), culprit)
    assert not (tmp_path / "adapted").exists()


def test_preprocessing_that_produces_nan_or_inf_is_named(bundle, tmp_path):
    meta = read_manifest(bundle)
    meta["input"]["std"] = [1e-45]  # positive, so a valid manifest, but x / std overflows in float32
    write_manifest(bundle, meta)
    support = write_support(tmp_path / "support", CLASSES)
    fails_cleanly(_adapt(bundle, support, tmp_path / "adapted"), "class 'circle': preprocessing gave non-finite")
    assert not (tmp_path / "adapted").exists()


@pytest.mark.parametrize("lr", ["1e38", "3e38"])
def test_a_diverging_step_size_is_detected_rolled_back_and_the_old_state_kept(lr, bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, _adapt(bundle, support, out, "--steps", "3")).exit_code == 0
    before = snapshot(out)
    line = fails_cleanly(_adapt(bundle, support, out, "--steps", "8", "--lr", lr), "diverged")
    assert "rolled back to the last finite state" in line and "try a smaller lr" in line
    assert snapshot(out) == before


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_non_positive_or_non_finite_step_size_is_a_usage_error(value, bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES[:2])
    fails_cleanly(_adapt(bundle, support, tmp_path / "adapted", "--lr", value), "lr must be", code=2)
    assert not (tmp_path / "adapted").exists()


# ---------------------------------------------------------------- nothing lost
@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_a_crash_while_saving_over_an_adapted_state_leaves_it_whole(crash_after, bundle, tmp_path, monkeypatch):
    import device_runtime.adapted_state as adapted_state

    support = write_support(tmp_path / "support", CLASSES)
    out = tmp_path / "adapted"
    assert runner.invoke(app, _adapt(bundle, support, out, "--steps", "1")).exit_code == 0
    before = snapshot(out)
    real = adapted_state.write_files

    def crash(directory, files):  # the power goes out after `crash_after` of the three files
        real(directory, dict(list(files.items())[:crash_after]))
        raise KeyboardInterrupt

    monkeypatch.setattr(adapted_state, "write_files", crash)
    result = runner.invoke(app, _adapt(bundle, support, out, "--steps", "9"))
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted", "bundle", "support"]  # no temp left behind



@pytest.mark.parametrize("args, culprit", [
    (["adapt", "b", "s", "--out", "o", "--steps", "-1"], "Invalid value for '--steps'"),
    (["meta-train", "--ways", "three"], "Invalid value for '--ways'"),
    (["pretrain", "--epochs", "2", "--nope"], "No such option: --nope"),
    (["bundle", "verify"], "Missing argument"),
])
def test_options_typer_cannot_parse_are_one_line_from_the_installed_command(args, culprit, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []
