"""The device benchmark's images: real Omniglot files copied byte for byte, seeded, with no class shared
between the measured set and the int8 calibration set; generated PNGs otherwise."""

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from device_adapt_images import (  # noqa: E402
    OMNIGLOT_DIR,
    ImagesMissing,
    calibration_images,
    omniglot_drawings,
    write_images,
)

from mtl.device_runtime.preprocess import InputSpec, preprocess  # noqa: E402

SPEC = InputSpec(size=28, channels=1, invert=True)


@pytest.fixture(scope="module")
def omniglot() -> Path:
    if not any(OMNIGLOT_DIR.glob("images_*.zip")):
        pytest.skip(f"real Omniglot data not found at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


def test_every_character_is_read_once_though_two_archives_hold_greek_and_latin(omniglot):
    drawings = omniglot_drawings(omniglot)
    assert len(drawings) == 242 and sum(len(d) for d in drawings.values()) == 4840
    assert all(len(d) == 20 for d in drawings.values())


def test_omniglot_support_and_queries_are_the_archive_files_byte_for_byte(omniglot, tmp_path):
    support, queries = write_images("omniglot", 4, 3, 10, 1, 105, tmp_path / "a", omniglot)
    classes = sorted(support.iterdir())
    assert [c.name for c in classes] == ["class_00", "class_01", "class_02", "class_03"]
    assert all(len(list(c.glob("*.png"))) == 3 for c in classes) and len(queries) == 10
    archives = [zipfile.ZipFile(z) for z in omniglot.glob("images_*.zip")]
    archive_files = {a.read(n) for a in archives for n in a.namelist() if n.endswith(".png")}
    written = [p.read_bytes() for p in support.glob("*/*.png")] + [Path(q).read_bytes() for q in queries]
    assert all(data in archive_files for data in written)
    with Image.open(queries[0]) as image:
        assert image.mode == "1" and image.size == (105, 105)
    # queries are later drawings of the support classes, never a support file again
    assert not {Path(q).read_bytes() for q in queries} & {p.read_bytes() for p in support.glob("*/*.png")}


def test_omniglot_choice_is_seeded(omniglot, tmp_path):
    first = write_images("omniglot", 5, 2, 5, 1, 105, tmp_path / "a", omniglot)[0]
    second = write_images("omniglot", 5, 2, 5, 1, 105, tmp_path / "b", omniglot)[0]
    assert [p.read_bytes() for p in sorted(first.glob("*/*.png"))] == \
        [p.read_bytes() for p in sorted(second.glob("*/*.png"))]


def test_calibration_never_uses_a_measured_class(omniglot, tmp_path):
    support, _ = write_images("omniglot", 20, 5, 25, 1, 105, tmp_path, omniglot)
    measured = preprocess(sorted(support.glob("*/*.png")), SPEC)  # (100, 1, 28, 28)
    calibration = calibration_images("omniglot", 1, 105, SPEC, 20, count=64, omniglot=omniglot)
    assert calibration.shape == (64, 1, 28, 28) and calibration.dtype == np.float32
    flat_measured = {m.tobytes() for m in measured}
    assert not any(c.tobytes() in flat_measured for c in calibration)


def test_synthetic_images_are_8_bit_pngs_of_the_asked_size(tmp_path):
    support, queries = write_images("synthetic", 3, 2, 4, 3, 40, tmp_path)
    assert len(list(support.glob("*/*.png"))) == 6 and len(queries) == 4
    with Image.open(queries[0]) as image:
        assert image.mode == "RGB" and image.size == (40, 40)
    grey = calibration_images("synthetic", 1, 105, SPEC, 3, count=8)
    assert grey.shape == (8, 1, 28, 28) and np.isfinite(grey).all()


def test_missing_archives_are_named(tmp_path):
    with pytest.raises(ImagesMissing, match=str(tmp_path)):
        write_images("omniglot", 5, 1, 5, 1, 105, tmp_path / "out", omniglot=tmp_path)


def test_conv4_is_measured_on_omniglot_unless_synthetic_images_are_asked_for():
    from device_adapt import parse_args, workloads

    conv4 = workloads(parse_args(["--backbone", "conv4"]))
    assert [(w.ways, w.images) for w in conv4] == [(5, "omniglot"), (20, "omniglot")]
    assert {w.images for w in workloads(parse_args([]))} == {"omniglot", "synthetic"}
    assert {w.images for w in workloads(parse_args(["--synthetic-images"]))} == {"synthetic"}
    assert [w.images for w in workloads(parse_args(["--quick"]))] == ["synthetic"]


def test_the_benchmark_names_missing_archives_before_measuring_anything(tmp_path, capsys):
    from device_adapt import main

    assert main(["--backbone", "conv4", "--omniglot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err and "--synthetic-images" in err
