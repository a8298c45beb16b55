import io
import time
import zipfile
from pathlib import Path

import pytest
import torch

from mtl.pipeline.data import load_data
from mtl.pipeline.data.omniglot import find_omniglot_sources, load_omniglot
from mtl.pipeline.errors import DataError
from tests.pipeline.data.conftest import glyph, write_images

ALPHABETS = {"Alpha": 2, "Beta": 3}  # alphabet → characters, 4 drawings each


def unpack_fake(root: Path, name: str = "images_background_small1", alphabets=None) -> Path:
    """An unpacked fake archive `root/name/<Alphabet>/characterNN/*.png`."""
    for a, (alphabet, chars) in enumerate((alphabets or ALPHABETS).items()):
        for c in range(chars):
            write_images(root / name / alphabet / f"character{c + 1:02d}", 4, seed=a * 100 + c, make=glyph)
    return root / name


def zip_fake(root: Path, name: str = "images_background_small1", alphabets=None) -> Path:
    """The same fake as a zip archive, written from memory (nothing unpacked beside it)."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{name}/", "")
        for a, (alphabet, chars) in enumerate((alphabets or ALPHABETS).items()):
            for c in range(chars):
                for i in range(4):
                    buffer = io.BytesIO()
                    glyph((a * 100 + c) * 1000 + i).save(buffer, "PNG")
                    zf.writestr(f"{name}/{alphabet}/character{c + 1:02d}/{i:02d}.png", buffer.getvalue())
    return archive


def test_real_omniglot_has_8_alphabets_242_characters_of_20_drawings(omniglot_dir):
    start = time.perf_counter()
    data = load_data(f"omniglot:{omniglot_dir}")
    seconds = time.perf_counter() - start
    assert data.num_classes == 242 and len(data) == 4840
    assert len(set(data.superclasses)) == 8
    assert set(data.counts.tolist()) == {20}
    assert data.image_shape == (1, 28, 28) and data.images.dtype == torch.uint8
    assert seconds < 10, f"loading Omniglot took {seconds:.1f} s"


def test_real_omniglot_strokes_are_bright_on_a_dark_background(omniglot_dir):
    data = load_omniglot(omniglot_dir)
    assert data.images.float().mean() < 60
    assert int(data.images.max()) == 255
    assert data.spec.invert and data.spec.channels == 1


def test_alphabets_in_both_archives_are_kept_once(omniglot_dir):
    data = load_omniglot(omniglot_dir)
    assert len(set(data.class_names)) == data.num_classes
    assert sum(name.startswith("Greek/") for name in data.class_names) == 24
    assert data.provenance["duplicate_classes_skipped"] == 50  # Greek (24) + Latin (26)
    assert len(data.provenance["sources"]) == 2


def test_classes_are_alphabet_slash_character_with_the_alphabet_as_superclass(tmp_path):
    data = load_omniglot(zip_fake(tmp_path))
    assert data.class_names == ("Alpha/character01", "Alpha/character02", "Beta/character01",
                                "Beta/character02", "Beta/character03")
    assert data.superclasses == ("Alpha", "Alpha", "Beta", "Beta", "Beta")
    assert data.counts.tolist() == [4] * 5


def test_a_zip_and_the_folder_it_unpacks_to_give_identical_images(tmp_path):
    from_zip = load_omniglot(zip_fake(tmp_path / "z"))
    from_folder = load_omniglot(unpack_fake(tmp_path / "f").parent)
    assert from_zip.class_names == from_folder.class_names
    assert torch.equal(from_zip.images, from_folder.images)


def test_torchvision_layout_and_a_zip_beside_its_folder_are_read_once(tmp_path):
    unpack_fake(tmp_path / "omniglot-py", "images_background")
    zip_fake(tmp_path / "omniglot-py", "images_background")
    assert find_omniglot_sources(tmp_path) == [tmp_path / "omniglot-py" / "images_background"]
    assert load_omniglot(tmp_path).num_classes == 5


def test_archives_with_the_same_characters_are_deduplicated(tmp_path):
    zip_fake(tmp_path, "images_background_small1")
    zip_fake(tmp_path, "images_background_small2", {"Beta": 3, "Gamma": 1})
    data = load_omniglot(tmp_path)
    assert data.num_classes == 6
    assert data.provenance["duplicate_classes_skipped"] == 3


def test_path_may_be_an_unpacked_archive_itself(tmp_path):
    assert load_omniglot(unpack_fake(tmp_path)).num_classes == 5


def test_image_size_is_honoured(tmp_path):
    data = load_omniglot(zip_fake(tmp_path), image_size=14)
    assert data.image_shape == (1, 14, 14)


def test_missing_path_names_it_and_says_what_belongs_there(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*images_background\*\.zip"):
        load_data(f"omniglot:{tmp_path / 'nowhere'}")


def test_a_folder_without_archives_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no Omniglot archives"):
        load_omniglot(tmp_path)


def test_a_corrupt_archive_is_named(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="images_background.zip"):
        load_omniglot(tmp_path)


def test_an_undecodable_drawing_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_evaluation.zip", "w") as zf:
        zf.writestr("images_evaluation/A/character01/bad.png", b"garbage")
    with pytest.raises(DataError, match="character01/bad.png"):
        load_omniglot(tmp_path)
