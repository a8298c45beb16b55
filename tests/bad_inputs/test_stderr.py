"""Nothing but the one error line reaches stderr (issue 13): no Pillow decompression-bomb warning for a huge
image, no numpy overflow warning for huge features, and a name with a newline in it does not split the line.
"""

import numpy as np
import pytest

from tests.bad_inputs.helpers import CLASSES, adapt_args, fails_cleanly, fails_cleanly_in_a_process, png
from tests.device_runtime.bundle_factory import embed_graph, projection, replace_file, write_bundle, write_support


def test_an_image_past_pillows_bomb_warning_is_one_line_not_a_warning(bundle, tmp_path):
    support = write_support(tmp_path / "support", CLASSES)
    (support / "star" / "big.png").write_bytes(png(np.zeros((40, 40), np.uint8)))
    patch = "import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1000"  # 1,600 pixels: Pillow warns (and decodes)
    line = fails_cleanly_in_a_process(adapt_args(bundle, support, tmp_path / "adapted"), "big.png", prelude=patch)
    assert "decompression bomb" in line.lower()


def test_an_image_past_mtls_own_pixel_cap_is_refused_from_its_header(bundle, tmp_path, monkeypatch):
    import mtl.device_runtime.preprocess as preprocess

    support = write_support(tmp_path / "support", CLASSES)
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 100)
    fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), "16x16 pixels is more than the 100")


def test_features_that_overflow_give_one_line_and_no_numpy_warning(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", head_init="proto")
    replace_file(bundle, "embed.onnx", embed_graph(projection() * np.float32(1e30)))  # ‖μ‖² overflows float32
    support = write_support(tmp_path / "support", CLASSES)
    fails_cleanly_in_a_process(adapt_args(bundle, support, tmp_path / "adapted"), "not finite")
    assert not (tmp_path / "adapted").exists()


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\x07"])
def test_a_class_folder_with_a_control_character_is_named_on_one_line(name, bundle, tmp_path):
    support = write_support(tmp_path / "support", [CLASSES[0], name])
    line = fails_cleanly(adapt_args(bundle, support, tmp_path / "adapted"), "has a control character")
    assert repr(name)[1:-1] in line  # written as an escape, e.g. two\nlines


def test_a_path_with_a_newline_in_an_error_stays_on_one_line(tmp_path):
    fails_cleanly(["bundle", "verify", str(tmp_path / "no\nsuch.mtlb")], "no\\nsuch.mtlb does not exist")
