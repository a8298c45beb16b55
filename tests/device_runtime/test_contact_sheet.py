import numpy as np
import pytest
from PIL import Image

from mtl.device_runtime.contact_sheet import PAD, THUMB, contact_sheet
from mtl.device_runtime.errors import DataError
from tests.device_runtime.bundle_factory import write_support


@pytest.fixture
def images(tmp_path):
    support = write_support(tmp_path / "support", ["a", "b", "c", "d", "e"], shots=1)
    return sorted(support.glob("*/0.png"))


def test_the_sheet_is_a_grid_of_cells_with_each_image_enlarged_and_a_caption(images):
    sheet = np.asarray(contact_sheet(images, list("abcde"), [0.9, 0.8, 0.7, 0.6, 0.5]))
    cell_w = THUMB + 2 * PAD
    assert sheet.shape[1] == 3 * cell_w and sheet.shape[0] % 2 == 0  # 5 images: 3 columns, 2 rows
    glyph = np.asarray(Image.open(images[0]).convert("RGB").resize((THUMB, THUMB), Image.Resampling.NEAREST))
    assert np.array_equal(sheet[PAD:PAD + THUMB, PAD:PAD + THUMB], glyph)
    caption = sheet[PAD + THUMB:sheet.shape[0] // 2, :cell_w]
    assert (caption < 128).any()  # ink under the image


def test_a_caption_changes_only_its_own_cell_even_when_too_long(images):
    short = np.asarray(contact_sheet(images[:2], ["a", "b"], [0.9, 0.9]))
    long = np.asarray(contact_sheet(images[:2], ["a" * 200, "b"], [0.9, 0.9]))
    cell_w = THUMB + 2 * PAD
    assert not np.array_equal(short[:, :cell_w], long[:, :cell_w])
    assert np.array_equal(short[:, cell_w:], long[:, cell_w:])  # cut with "...", never spills over


def test_labels_and_confidences_must_match_the_images(images):
    with pytest.raises(DataError, match="one label and confidence per image"):
        contact_sheet(images, ["a"], [0.5])
