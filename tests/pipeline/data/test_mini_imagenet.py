from pathlib import Path

import pytest

from mtl.pipeline.data import load_data, make_splits
from mtl.pipeline.errors import DataError
from tests.pipeline.data.conftest import photo

CLASSES = {"train": ["n01", "n02", "n03"], "val": ["n04"], "test": ["n05", "n06"]}


def write_fake_mini_imagenet(root: Path, per_class: int = 3, nested: bool = False) -> Path:
    """Ravi & Larochelle layout: {train,val,test}.csv (`filename,label`) and images/ with tiny JPEGs."""
    (root / "images").mkdir(parents=True)
    for p, (part, labels) in enumerate(CLASSES.items()):
        rows = ["filename,label"]
        for c, label in enumerate(labels):
            for i in range(per_class):
                filename = f"{label}{i:08d}.jpg"
                folder = root / "images" / label if nested else root / "images"
                folder.mkdir(exist_ok=True)
                photo(p * 100 + c * 10 + i, size=90).save(folder / filename)
                rows.append(f"{filename},{label}")
        (root / f"{part}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_classes_images_and_the_official_split_come_from_the_csvs(tmp_path):
    data = load_data(f"mini-imagenet:{write_fake_mini_imagenet(tmp_path)}")
    assert data.class_names == ("n01", "n02", "n03", "n04", "n05", "n06")
    assert data.counts.tolist() == [3] * 6
    assert data.image_shape == (3, 84, 84)
    assert data.spec.mean == (0.485, 0.456, 0.406)
    assert make_splits(data, seed=5).to_dict() == CLASSES


def test_images_may_sit_in_one_folder_per_label(tmp_path):
    data = load_data(f"mini-imagenet:{write_fake_mini_imagenet(tmp_path, nested=True)}", image_size=32)
    assert data.num_classes == 6 and data.image_shape == (3, 32, 32)


def test_missing_csvs_are_named_with_the_expected_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train.csv").write_text("filename,label\n")
    with pytest.raises(DataError, match=r"missing .*val\.csv, .*test\.csv\).*filename,label"):
        load_data(f"mini-imagenet:{tmp_path}")


def test_a_missing_image_names_the_file_and_the_csv_that_lists_it(tmp_path):
    root = write_fake_mini_imagenet(tmp_path)
    (root / "images" / "n0500000001.jpg").unlink()
    with pytest.raises(DataError, match=r"n0500000001\.jpg listed in .*test\.csv"):
        load_data(f"mini-imagenet:{root}")


def test_a_class_in_two_csvs_is_rejected(tmp_path):
    root = write_fake_mini_imagenet(tmp_path)
    with open(root / "val.csv", "a") as handle:
        handle.write("n0100000000.jpg,n01\n")
    with pytest.raises(DataError, match="class n01 .*val.csv"):
        load_data(f"mini-imagenet:{root}")


def test_a_csv_without_the_header_is_named(tmp_path):
    root = write_fake_mini_imagenet(tmp_path)
    (root / "test.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"test\.csv must start with the header"):
        load_data(f"mini-imagenet:{root}")


def test_download_is_refused_with_what_to_put_where(tmp_path):
    with pytest.raises(DataError, match="cannot be downloaded.*train.csv"):
        load_data(f"mini-imagenet:{tmp_path}", download=True)
