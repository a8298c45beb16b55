"""Property test (hypothesis) of hostile manifests, end to end (issue 13): whatever a manifest holds — wrong
types, values at and past every range, huge or deeply nested values, missing or extra keys — `Bundle.load`
either refuses it with one `MtlError` line, or the bundle it accepts then adapts and predicts with finite
probabilities. Nothing else: no other exception, no hang, no message spread over several lines.
"""

import copy
import json

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mtl.device_runtime import Adapter, Bundle
from mtl.device_runtime.errors import BundleError, MtlError
from tests.device_runtime.bundle_factory import glyph, key_paths

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RAW = "@@RAW{}@@"  # a placeholder for JSON text json.dumps cannot write (NaN, 5000-digit integers, deep nesting)
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-" + "9" * 30, "[" * 500 + "]" * 500,
              "0.0000000000000000000000000000000000000000000001", "1e308"]
EDGE_NUMBERS = [0, -1, 1, 2, 7, 8, 1023, 1024, 1025, 4096, 65536, 65537, 1000, 1001, 2**31, 2**63 - 1, -2**63,
                1e-12, 1e-13, 1e-4, 1e3, 1e4, 1e300, -0.0, 5e-324, 0.5, 3.0, True, False]
STRINGS = ["", "[red]x", "a\nb", "../x", "B", "N", "M", "float32", "int64", "learned", "proto", "x" * 300]
LEAF = (st.sampled_from(EDGE_NUMBERS) | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20) | st.sampled_from(STRINGS) | st.none())
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


def _like(value: object) -> st.SearchStrategy:
    """Values of the same JSON type as `value`, near the edges of what a manifest allows."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from([v for v in EDGE_NUMBERS if type(v) is int]) | st.integers(-5, 70_000)
    if isinstance(value, float):
        return st.sampled_from([v for v in EDGE_NUMBERS if type(v) is float]) | st.floats(1e-13, 1e4)
    if isinstance(value, str):
        return st.sampled_from(STRINGS) | st.text(max_size=12)
    if isinstance(value, list):
        return st.lists(st.sampled_from(value) if value else LEAF, max_size=len(value) + 1)
    return JSON


def _edit(manifest: dict, data: st.DataObject) -> str:
    """1–3 edits (replace, delete, add a key, raw JSON text) of `manifest`, as the manifest.json text."""
    edited, raws = copy.deepcopy(manifest), []
    paths = [p for p in key_paths(manifest) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = edited
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = data.draw(st.sampled_from(["same-type", "same-type", "replace", "raw", "delete", "add"]))
            if action == "same-type":  # plausible values, so that many edited bundles pass verify and must adapt
                parent[path[-1]] = data.draw(_like(parent[path[-1]]))
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif action == "add" and isinstance(parent, dict):
                parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(JSON)
            elif action == "raw":
                parent[path[-1]] = RAW.format(len(raws))
                raws.append(data.draw(st.sampled_from(RAW_TOKENS)))
            else:
                parent[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    text = json.dumps(edited)
    for i, token in enumerate(raws):
        text = text.replace(json.dumps(RAW.format(i)), token)
    return text


@SETTINGS
@given(data=st.data())
def test_a_hostile_manifest_is_refused_in_one_line_or_the_bundle_adapts_and_predicts(good, tmp_path_factory, data):
    path, manifest = good
    bundle_dir = tmp_path_factory.mktemp("edited")
    for file in path.iterdir():
        (bundle_dir / file.name).write_bytes(file.read_bytes())
    (bundle_dir / "manifest.json").write_text(_edit(manifest, data))
    try:
        bundle = Bundle.load(bundle_dir)
    except MtlError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)
        event("refused at load")
        return
    event("accepted")
    rng = np.random.default_rng(0)
    size = bundle.input_spec.size
    adapter = Adapter(bundle)
    try:
        for label in range(3):
            adapter.add_examples(f"class{label}", [glyph(label, rng, size) for _ in range(2)])
        adapter.adapt()
    except BundleError as exc:  # an accepted step size may still diverge: rolled back, said in one line
        assert "diverged" in str(exc) and "\n" not in str(exc), str(exc)
        return
    labels, probs = adapter.predict([glyph(label, rng, size) for label in range(3)])
    assert len(labels) == 3 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
