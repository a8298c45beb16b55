import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mtl.pipeline.data import load_data, make_splits
from mtl.pipeline.data.cifar import CIFAR100_SUPERCLASSES, CIFAR_FS_SPLIT, FC100_SPLIT, read_cifar_file
from mtl.pipeline.errors import DataError

FINE = sorted(name for members in CIFAR100_SUPERCLASSES.values() for name in members)
COARSE = list(CIFAR100_SUPERCLASSES)


def write_fake_cifar100(root: Path, per_class: tuple[int, int] = (2, 1)) -> Path:
    """torchvision's on-disk CIFAR-100 (`cifar-100-python/{train,test,meta}`) with a few images per class.

    Pixel (0, 0) of every red channel holds the fine label, so tests can check where images went.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    coarse_of = {fine: COARSE.index(c) for c, members in CIFAR100_SUPERCLASSES.items() for fine in members}
    for part, count in zip(("train", "test"), per_class, strict=True):
        labels = [label for label in range(100) for _ in range(count)]
        data = np.random.default_rng(0).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels
        entry = {"filenames": [f"{i}.png" for i in range(len(labels))], "batch_label": part,
                 "fine_labels": labels, "coarse_labels": [coarse_of[FINE[i]] for i in labels], "data": data}
        (folder / part).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": FINE, "coarse_label_names": COARSE}))
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return write_fake_cifar100(tmp_path_factory.mktemp("cifar"))


def test_the_standard_split_lists_partition_the_100_classes():
    for split, sizes in ((CIFAR_FS_SPLIT, (64, 16, 20)), (FC100_SPLIT, (60, 20, 20))):
        names = [n for part in ("train", "val", "test") for n in split[part]]
        assert sorted(names) == FINE
        assert tuple(len(split[p]) for p in ("train", "val", "test")) == sizes


def test_cifar_fs_unites_train_and_test_images_of_each_class(cifar_root):
    data = load_data(f"cifar-fs:{cifar_root}")
    assert data.num_classes == 100 and data.class_names == tuple(FINE)
    assert data.counts.tolist() == [3] * 100
    assert data.image_shape == (3, 32, 32)
    assert data.images[:, 0, 0, 0].tolist() == [label for label in range(100) for _ in range(3)]
    assert data.spec.mean == (0.5071, 0.4865, 0.4409)


def test_cifar_fs_splits_follow_bertinetto_et_al(cifar_root):
    splits = make_splits(load_data(f"cifar-fs:{cifar_root}"), seed=123)
    assert set(splits.test) == set(CIFAR_FS_SPLIT["test"])
    assert {"otter", "motorcycle", "television"} <= set(splits.val)
    assert len(splits.train) == 64


def test_fc100_splits_by_superclass_and_records_each_class_superclass(cifar_root):
    data = load_data(f"fc100:{cifar_root}")
    assert data.superclasses[FINE.index("whale")] == "aquatic_mammals"
    splits = make_splits(data)
    test_groups = {data.superclasses[i] for i in splits.indices(data, "test")}
    assert test_groups == {"aquatic_mammals", "insects", "medium_mammals", "people"}
    train_groups = {data.superclasses[i] for i in splits.indices(data, "train")}
    assert train_groups.isdisjoint(test_groups) and len(train_groups) == 12


def test_the_cifar_folder_itself_may_be_given(cifar_root):
    assert load_data(f"cifar-fs:{cifar_root / 'cifar-100-python'}", image_size=16).image_shape == (3, 16, 16)


def test_missing_data_says_where_to_put_it_and_that_download_fetches_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python.*--download"):
        load_data(f"fc100:{tmp_path}")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    root = write_fake_cifar100(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (root / "cifar-100-python" / "meta").write_bytes(pickle.dumps({"fine_label_names": Exploit()}))
    with pytest.raises(DataError, match="refusing to load"):
        load_data(f"cifar-fs:{root}")


def test_a_meta_file_with_other_classes_is_rejected(tmp_path):
    root = write_fake_cifar100(tmp_path)
    (root / "cifar-100-python" / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a", "b"]}))
    with pytest.raises(DataError, match="100 CIFAR-100 classes"):
        load_data(f"cifar-fs:{root}")


def test_the_python2_pickles_cifar_ships_are_read(tmp_path):
    # What Python 2 + numpy 1.x wrote: {'data': arange(6, uint8).reshape(2, 3), 'fine_labels': [1, 2]}.
    py2 = (b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03"
           b"K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87R(K\x03"
           b"U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tb"
           b"U\x0bfine_labelsq\x06]q\x07(K\x01K\x02eu.")
    (tmp_path / "train").write_bytes(py2)
    entry = read_cifar_file(tmp_path / "train")
    assert entry["data"].tolist() == [[0, 1, 2], [3, 4, 5]] and entry["fine_labels"] == [1, 2]


def test_pixels_and_labels_that_disagree_are_rejected(tmp_path):
    root = write_fake_cifar100(tmp_path)
    entry = {"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1]}
    (root / "cifar-100-python" / "test").write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match=r"test holds 9216 bytes of pixels for 2 labels"):
        load_data(f"cifar-fs:{root}")
