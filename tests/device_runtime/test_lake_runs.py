"""The one-shot runs of Lake et al. (2015): written in the official layout, read back from a folder or a zip,
and scored through the device runtime (no torch)."""

import io
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from mtl.device_runtime import Bundle
from mtl.device_runtime.errors import DataError
from mtl.device_runtime.lake_runs import evaluate_runs, read_runs, write_runs
from tests.device_runtime.bundle_factory import glyph, write_bundle


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def drawings():
    """4 separable classes (the factory's glyphs), 3 drawings each."""
    rng = np.random.default_rng(0)
    return {f"alpha/char{c}": [_png(glyph(c, rng)) for _ in range(3)] for c in range(4)}


def test_written_runs_have_the_official_layout_and_read_back(drawings, tmp_path):
    root = write_runs(drawings, tmp_path / "all_runs", runs=3, ways=4, seed=1)
    assert sorted(p.name for p in root.iterdir()) == ["run01", "run02", "run03"]
    lines = (root / "run01" / "class_labels.txt").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("run01/test/item01.png run01/training/class")
    runs = read_runs(root)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    assert all(len(r.training) == 4 and len(r.test) == 4 for r in runs)
    assert {answer for _, _, answer in runs[0].test} == set(runs[0].training)


def test_runs_read_from_a_zip_or_a_parent_folder_alike(drawings, tmp_path):
    root = write_runs(drawings, tmp_path / "data" / "all_runs", runs=2, ways=4)
    archive = tmp_path / "all_runs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, f"all_runs/{path.relative_to(root).as_posix()}")
    from_zip, from_parent = read_runs(archive), read_runs(tmp_path / "data")
    assert [r.training for r in from_zip] == [r.training for r in from_parent] == [r.training for r in read_runs(root)]


def test_a_bundle_scores_separable_runs_perfectly_through_the_device_runtime(drawings, tmp_path):
    bundle = Bundle.load(write_bundle(tmp_path / "bundle"))
    result = evaluate_runs(bundle, read_runs(write_runs(drawings, tmp_path / "runs", runs=4, ways=4)), steps=10)
    assert result.per_run == (1.0, 1.0, 1.0, 1.0) and result.mean == 1.0 and result.ways == 4


def test_a_folder_without_runs_or_with_a_broken_labels_file_is_named(drawings, tmp_path):
    with pytest.raises(DataError, match="holds no runNN/class_labels.txt"):
        read_runs(tmp_path)
    root = write_runs(drawings, tmp_path / "runs", runs=1, ways=4)
    (root / "run01" / "class_labels.txt").write_text("run01/test/item01.png run01/training/class99.png\n")
    with pytest.raises(DataError, match="names 'run01/training/class99.png', which is not in the runs"):
        read_runs(root)
    shutil.rmtree(root)
    with pytest.raises(DataError, match="need 5 characters"):
        write_runs(drawings, tmp_path / "runs", ways=5)
