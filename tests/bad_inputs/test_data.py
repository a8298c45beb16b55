"""Bad data sources and images, through the training CLI.

Each bad input ends in one line on stderr naming the culprit, a non-zero exit, no traceback, and nothing
written or the previous output left as it was."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bad_inputs.helpers import fails_cleanly, image_folder, png


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
    from mtl.pipeline.data import load_data

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
