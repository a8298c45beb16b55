import numpy as np
import pytest
from PIL import Image

from mtl.pipeline.data import folder as folder_module
from mtl.pipeline.data import load_data, load_image
from mtl.pipeline.data.folder import decode_images, folder_spec, load_folder
from mtl.pipeline.errors import DataError
from tests.pipeline.data.conftest import write_images


def test_flat_class_folders_become_classes_without_superclasses(tmp_path):
    write_images(tmp_path / "cat", 3, seed=1)
    write_images(tmp_path / "dog", 2, seed=2, suffix=".jpg")
    data = load_data(f"folder:{tmp_path}")
    assert data.class_names == ("cat", "dog")
    assert data.superclasses == ("", "")
    assert data.counts.tolist() == [3, 2]
    assert data.image_shape == (3, 84, 84)


def test_nested_class_folders_are_named_by_relative_path_with_the_top_folder_as_superclass(tmp_path):
    write_images(tmp_path / "Greek" / "alpha", 2)
    write_images(tmp_path / "Greek" / "beta", 2)
    write_images(tmp_path / "Latin" / "a", 2)
    data = load_folder(tmp_path)
    assert data.class_names == ("Greek/alpha", "Greek/beta", "Latin/a")
    assert data.superclasses == ("Greek", "Greek", "Latin")


def test_images_are_decoded_exactly_as_load_image_does(tmp_path):
    paths = write_images(tmp_path / "a", 2, suffix=".bmp")
    data = load_folder(tmp_path, image_size=16)
    assert np.array_equal(data.images[1].numpy(), load_image(paths[1], data.spec))
    assert data.image_shape == (3, 16, 16)


def test_train_val_test_top_folders_are_read_as_an_official_split(tmp_path):
    for part, classes in {"train": ["a", "b"], "val": ["c"], "test": ["d"]}.items():
        for name in classes:
            write_images(tmp_path / part / name, 2)
    data = load_folder(tmp_path)
    assert data.provenance["official_split"] == {"train": ["train/a", "train/b"], "val": ["val/c"],
                                                  "test": ["test/d"]}


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / ".thumbnail.png").write_bytes(b"junk")
    write_images(tmp_path / ".cache" / "b", 2)
    data = load_folder(tmp_path)
    assert data.class_names == ("a",) and data.counts.tolist() == [2]


def test_an_unreadable_image_is_named(tmp_path):
    write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        load_folder(tmp_path)


def test_a_folder_without_class_folders_names_the_path(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match=f"no class folders.*{tmp_path}"):
        load_folder(tmp_path)


def test_a_missing_folder_names_the_path_and_the_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"absent.*one sub-folder of images per class"):
        load_data(f"folder:{tmp_path / 'absent'}")


def test_the_thread_pool_decodes_the_same_images_in_the_same_order(tmp_path, monkeypatch):
    paths = write_images(tmp_path, 80, suffix=".jpg")
    spec = folder_spec(20)
    serial = decode_images(paths, spec, workers=1)
    monkeypatch.setattr(folder_module, "_SLOW_IMAGE_S", 0.0)
    threaded = decode_images(paths, spec, workers=4)
    assert np.array_equal(serial, threaded)
