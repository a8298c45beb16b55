import io

import numpy as np
import pytest
from PIL import Image

import mtl.device_runtime.preprocess as device_preprocess
from mtl.device_runtime.errors import BundleError, DataError, MtlError
from mtl.device_runtime.preprocess import InputSpec, normalize, preprocess
from tests.tolerance import assert_float_close


def expected(images_uint8: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """The training transform written out: load_image's uint8 (C, H, W), then (x / 255 − mean) / std."""
    mean = np.array(spec.mean, np.float32)[:, None, None]
    std = np.array(spec.std, np.float32)[:, None, None]
    return np.stack([(x.astype(np.float32) / np.float32(255.0) - mean) / std for x in images_uint8])


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(3)
    paths = []
    for i, size in enumerate((16, 23, 40)):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("spec", [InputSpec(size=16, channels=1, mean=(0.5,), std=(0.25,), invert=True),
                                  InputSpec(size=12, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
                                            resize="bicubic")])
def test_preprocessing_equals_the_training_transform_of_load_image(pngs, spec):
    pytest.importorskip("torch", reason="the training side (pipeline.data) needs the train extra")
    from mtl.pipeline.data.images import load_image

    reference = expected([load_image(p, spec) for p in pngs], spec)
    assert np.array_equal(preprocess(pngs, spec), reference)
    assert np.array_equal(preprocess([str(p) for p in pngs], spec), reference)
    assert np.array_equal(preprocess([p.read_bytes() for p in pngs], spec), reference)
    assert np.array_equal(preprocess([Image.open(p) for p in pngs], spec), reference)
    assert np.array_equal(preprocess([np.asarray(Image.open(p)) for p in pngs], spec), reference)
    assert preprocess(pngs, spec).dtype == np.float32


def test_pipeline_re_exports_the_one_definition():
    pytest.importorskip("torch", reason="the training side (pipeline.data) needs the train extra")
    import mtl.device_runtime.atomic as device_atomic
    import mtl.device_runtime.errors as device_errors
    import mtl.pipeline.atomic as pipeline_atomic
    import mtl.pipeline.data.images as pipeline_images
    import mtl.pipeline.errors as pipeline_errors

    for name in ("InputSpec", "convert_image", "load_image", "IMAGE_SUFFIXES", "RESIZE_METHODS"):
        assert getattr(pipeline_images, name) is getattr(device_preprocess, name)
    for name in ("MtlError", "ConfigError", "DataError", "CheckpointError", "BundleError", "OutputError"):
        assert getattr(pipeline_errors, name) is getattr(device_errors, name)
    assert pipeline_atomic.atomic_write_bytes is device_atomic.atomic_write_bytes
    assert issubclass(BundleError, MtlError) and issubclass(MtlError, ValueError)


def test_one_image_on_its_own_is_a_batch_of_one(pngs):
    spec = InputSpec(size=16)
    assert preprocess(pngs[0], spec).shape == (1, 1, 16, 16)
    assert preprocess([], spec).shape == (0, 1, 16, 16)


def test_normalize_matches_float32_arithmetic():
    spec = InputSpec(size=8, channels=1, mean=(0.1307,), std=(0.3081,))
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    out = normalize(x, spec)
    assert out.dtype == np.float32
    assert_float_close(out, (x / 255.0 - 0.1307) / 0.3081, ulps=4)


def test_an_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        preprocess([bad], InputSpec(size=16))
    with pytest.raises(DataError, match="missing.png"):
        preprocess([tmp_path / "missing.png"], InputSpec(size=16))


def test_a_bad_array_or_object_is_named():
    with pytest.raises(DataError, match="#1.*uint8"):
        preprocess([np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.float64)], InputSpec(size=16))
    with pytest.raises(DataError, match="#0.*int"):
        preprocess([42], InputSpec(size=16))


def test_encoded_bytes_decode_like_a_file(pngs):
    spec = InputSpec(size=16)
    data = pngs[1].read_bytes()
    assert np.array_equal(preprocess([io.BytesIO(data).getvalue()], spec), preprocess([pngs[1]], spec))
