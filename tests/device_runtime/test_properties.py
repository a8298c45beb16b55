"""Property-based checks (hypothesis): whatever a manifest, a zip's member names or an image's bytes hold,
the runtime either gives a correct result or raises a clean `MtlError` — never another exception."""

import copy
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mtl.device_runtime import Bundle
from mtl.device_runtime.archive import ZipSource
from mtl.device_runtime.errors import MtlError
from mtl.device_runtime.manifest import Manifest
from mtl.device_runtime.preprocess import InputSpec, load_image
from tests.device_runtime.bundle_factory import key_paths

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4), max_leaves=12)


@SETTINGS
@given(data=st.data())
def test_any_edit_of_a_manifest_is_accepted_or_a_clean_error(good, data):
    _, manifest = good
    edited = copy.deepcopy(manifest)
    paths = [p for p in key_paths(manifest) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = edited
        try:
            for key in path[:-1]:
                parent = parent[key]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    raw = json.dumps(edited, allow_nan=True).encode()
    try:
        parsed = Manifest.parse(raw)
    except MtlError:
        return
    assert parsed.schema == "mtl-bundle/3" and isinstance(parsed.feature_dim, int)
    assert Manifest.parse(parsed.to_json()) == parsed  # what is accepted writes back to itself


@SETTINGS
@given(raw=st.binary(max_size=400) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_manifest_bytes_are_a_clean_error(raw):
    with pytest.raises(MtlError):
        Manifest.parse(raw)


@SETTINGS
@given(names=st.lists(st.text(min_size=1, max_size=24) | st.sampled_from(
    ["../x", "/abs", "a/../../b", "a//b", "./a", "C:\\x", "a\\b", "ok/", "embed.onnx", "manifest.json"]),
    min_size=1, max_size=5))
def test_any_zip_member_names_are_safe_or_refused(good, names):
    path, _ = good
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names are among the cases
        archive.writestr("manifest.json", (path / "manifest.json").read_bytes())
        for name in names:
            try:
                archive.writestr(zipfile.ZipInfo(name), b"data")
            except (ValueError, UnicodeEncodeError):
                return  # zipfile itself cannot write such a name
    try:
        source = ZipSource(buffer.getvalue(), "prop.mtlb")
    except MtlError:
        return
    for member in source.members:  # whatever was accepted stays inside the bundle
        assert not member.startswith("/") and ".." not in member.split("/") and "\\" not in member
    with pytest.raises(MtlError):  # and the bundle itself is incomplete or lists foreign members
        Bundle.from_bytes(buffer.getvalue())


def _encoded(seed: int, mode: str, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("I", "F") else "PNG")  # PNG has no 32-bit or float mode
    return buffer.getvalue()


SPEC = InputSpec(size=16, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@SETTINGS
@given(seed=st.integers(0, 1000), mode=st.sampled_from(["L", "RGB", "RGBA", "P", "1", "LA", "I", "F"]),
       size=st.tuples(st.integers(1, 40), st.integers(1, 40)), cut=st.integers(0, 400),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3))
def test_any_image_bytes_decode_to_the_spec_or_a_clean_error(seed, mode, size, cut, flips):
    data = bytearray(_encoded(seed, mode, size))
    for at, mask in flips:
        data[at % len(data)] ^= mask
    if cut:
        data = data[:max(0, len(data) - cut)]
    try:
        image = load_image(bytes(data), SPEC)
    except MtlError:
        return
    assert image.dtype == np.uint8 and image.shape == (3, 16, 16)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_random_bytes_are_never_an_image_by_accident_without_a_clean_result(raw):
    try:
        image = load_image(raw, SPEC)
    except MtlError:
        return
    assert image.shape == (3, 16, 16)
