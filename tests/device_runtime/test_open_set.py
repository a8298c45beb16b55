"""Open-set recognition (`--reject`): an image of none of the adapted classes is labelled "unknown" by its
similarity to the nearest prototype, against a threshold the support set alone gives (leave-one-class-out)."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from mtl.device_runtime import Adapter, Bundle, open_set
from mtl.device_runtime.errors import ConfigError
from tests.device_runtime.bundle_factory import DIM, glyph, write_bundle, write_support

runner = CliRunner()


def test_the_auto_threshold_is_the_closest_a_support_image_comes_to_another_class():
    features = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1])
    # class 0's prototype is the unit mean of its two images; image 1 is cos 0.6 from class 1's prototype
    assert open_set.auto_threshold(features, labels, 2) == pytest.approx(0.6)
    protos = open_set.prototypes(features, labels, 2)
    scores = open_set.scores(np.array([[0.0, 0.0, 1.0], [0.9, 0.3, 0.0]]), protos)
    assert scores[0] == pytest.approx(0.0) and scores[1] > 0.9  # a new direction is far from both


def test_an_explicit_threshold_is_checked():
    assert open_set.parse_reject("auto") == "auto" and open_set.parse_reject("0.5") == 0.5
    for bad in ("2.5", "sometimes", "nan"):
        with pytest.raises(ConfigError, match="--reject|reject must"):
            open_set.parse_reject(bad)


def test_an_image_unlike_every_class_is_rejected_and_the_known_ones_are_not(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    adapter = Adapter(Bundle.load(bundle))
    rng = np.random.default_rng(0)
    for label in range(3):
        adapter.add_examples(f"c{label}", [glyph(label, rng) for _ in range(3)])
    adapter.adapt()
    known = [glyph(label, rng) for label in range(3)]
    unknown = [np.full((16, 16), 230, np.uint8)]  # bright all over: unlike every class's images
    names, probs, scores, limit = adapter.predict_scored(known + unknown, "auto")
    assert names == ["c0", "c1", "c2", open_set.UNKNOWN]
    assert scores[3] < limit <= scores[:3].min()
    assert adapter.predict(known + unknown)[0][3] != open_set.UNKNOWN  # reject off: always one of the classes
    assert probs.shape == (4, 3)


def test_predict_json_gives_the_score_and_threshold(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    support = write_support(tmp_path / "support", ["a", "b", "c"])
    assert runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(tmp_path / "state")]).exit_code == 0
    image = next((support / "a").iterdir())
    result = runner.invoke(app, ["predict", str(tmp_path / "state"), str(image), "--reject", "auto", "--json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert record["label"] == "a" and record["score"] >= record["threshold"]
    result = runner.invoke(app, ["predict", str(tmp_path / "state"), str(image), "--reject", "often"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1


def test_the_bundles_calibrated_thresholds_are_used_interpolated_in_log_shots(tmp_path):
    from tests.device_runtime.bundle_factory import read_manifest, write_manifest

    assert open_set.calibrated_threshold({"1": 0.6, "5": 0.8}, 1) == pytest.approx(0.6)
    assert open_set.calibrated_threshold({"1": 0.6, "5": 0.8}, math.sqrt(5)) == pytest.approx(0.7)
    assert open_set.calibrated_threshold({"1": 0.6, "5": 0.8}, 20) == pytest.approx(0.8)  # clamped
    bundle = write_bundle(tmp_path / "bundle")
    meta = read_manifest(bundle)
    meta["open_set"] = {"known_loss": 0.05, "thresholds": {"1": 0.25, "5": 0.35}, "ways": 5, "episodes": 10}
    write_manifest(bundle, meta)
    adapter = Adapter(Bundle.load(bundle))
    rng = np.random.default_rng(0)
    for label in range(3):
        adapter.add_examples(f"c{label}", [glyph(label, rng) for _ in range(5)])
    adapter.adapt()
    *_, limit = adapter.predict_scored([glyph(0, rng)], "auto")
    assert limit == pytest.approx(0.35)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(known_loss=0), "known_loss"), (lambda s: s["thresholds"].update(x=0.5), "shot counts"),
    (lambda s: s["thresholds"].update({"1": 1.5}), r"similarity in \[-1, 1\]"),
    (lambda s: s.update(background=3) or s["thresholds"].update({"1": 2.5}), r"score in \[-2, 2\]"),
    (lambda s: s.pop("thresholds"), "thresholds"),
    (lambda s: s.update(background=0), "open_set.background must be between 1 and 4096"),
    (lambda s: s.update(background=True), "open_set.background must be an integer"),
    (lambda s: s.update(background=3), "init.arrays must be")])  # rows that init.npz does not hold
def test_a_bad_open_set_section_is_refused_in_one_line(tmp_path, edit, message):
    from mtl.device_runtime.errors import BundleError
    from tests.device_runtime.bundle_factory import read_manifest, write_manifest

    bundle = write_bundle(tmp_path / "bundle")
    meta = read_manifest(bundle)
    meta["open_set"] = {"known_loss": 0.05, "thresholds": {"1": 0.25, "5": 0.35}}
    edit(meta["open_set"])
    write_manifest(bundle, meta)
    with pytest.raises(BundleError, match=message) as info:
        Bundle.load(bundle)
    assert "\n" not in str(info.value)


def test_the_score_is_relative_to_the_background_of_training_classes():
    protos = open_set.prototypes(np.eye(4)[:2], np.arange(2), 2)
    background = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.6, 0.8, 0.0], [0.0, 0.0, 0.8, 0.6]])
    images = np.array([[1.0, 0.0, 0.0, 0.0], [0.6, 0.0, 0.8, 0.0]])
    plain = open_set.scores(images, protos)
    near = np.sort(images / np.linalg.norm(images, axis=1, keepdims=True) @ background.T, axis=1)[:, -3:].mean(axis=1)
    got = open_set.scores(images, protos, background)
    np.testing.assert_allclose(got, plain - near, rtol=0, atol=8 * np.finfo(np.float64).eps)
    # the second image is 0.6 from class 0 but 0.8 / 0.64 / 0.64 from the background: relative score below 0
    assert plain[1] == pytest.approx(0.6) and got[1] < 0 < got[0]
    # leave-one-class-out is relative too: each support image against the other prototype, minus its background
    # (image 0: 0 − mean(0, 0, 0), the higher; image 1: 0 − mean(0, 0, 0.6))
    assert open_set.auto_threshold(np.eye(4)[:2], np.arange(2), 2, background) == pytest.approx(0.0)


def test_a_background_row_that_is_an_adapted_class_is_not_background():
    """A device adapting to a class the producer trained on: that class's training mean, in the background, would
    score its own images against themselves. Rows more similar than SAME_CLASS to a prototype are left out."""
    protos = open_set.prototypes(np.eye(4)[:2], np.arange(2), 2)
    twin = np.array([0.99, 0.141, 0.0, 0.0])  # cos 0.99 to class 0's prototype
    background = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.6, 0.8], twin])
    assert open_set.not_adapted(protos, background).tolist() == background[:3].tolist()
    image = np.array([[1.0, 0.0, 0.0, 0.0]])
    assert open_set.scores(image, protos, background) == pytest.approx(open_set.scores(image, protos, background[:3]))
    # a background of the twin alone is no background
    assert open_set.scores(image, protos, twin[None]) == pytest.approx(open_set.scores(image, protos))


def test_a_calibrated_background_is_used_and_makes_auto_the_cli_default(tmp_path):
    from tests.device_runtime.bundle_factory import add_background

    support = write_support(tmp_path / "support", ["a", "b", "c"])
    image = next((support / "a").iterdir())
    for name, background in (("plain", None), ("calibrated", np.full((3, DIM), DIM ** -0.5))):
        bundle = write_bundle(tmp_path / name)
        if background is not None:
            add_background(bundle, background, {"1": 0.05, "5": 0.1})
        state = tmp_path / f"{name}-state"
        assert runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(state)]).exit_code == 0
        result = runner.invoke(app, ["predict", str(state), str(image), "--json"])
        assert result.exit_code == 0, result.output
        (record,) = json.loads(result.output)
        adapter = Adapter.load(state)
        _, _, scores, _ = adapter.predict_scored([image], "auto")
        assert record["score"] == pytest.approx(float(scores[0]), rel=0, abs=1e-12)
        if background is None:  # off by default: no threshold, and the score is the plain similarity
            assert "threshold" not in record
        else:
            shots = adapter.result.support / len(adapter.result.classes)
            assert record["threshold"] == pytest.approx(open_set.calibrated_threshold({"1": 0.05, "5": 0.1}, shots))
            sims = open_set.scores(adapter.bundle.embed(adapter._as_batch([image])),
                                   open_set.prototypes(*adapter._support_set(), 3))
            assert record["score"] < float(sims[0])  # relative to a background it is similar to


def test_augmented_variants_do_not_count_as_shots_for_the_calibrated_threshold(tmp_path):
    from tests.device_runtime.bundle_factory import read_manifest, write_manifest

    bundle = write_bundle(tmp_path / "bundle")
    meta = read_manifest(bundle)
    meta["open_set"] = {"known_loss": 0.05, "thresholds": {"1": 0.25, "5": 0.35}}
    write_manifest(bundle, meta)
    adapter = Adapter(Bundle.load(bundle))
    rng = np.random.default_rng(0)
    for label in range(3):  # one drawing each, and 8 variants of it: still a one-shot support set
        adapter.add_examples(f"c{label}", [glyph(label, rng)], augment=8)
    adapter.adapt()
    *_, limit = adapter.predict_scored([glyph(0, rng)], "auto")
    assert adapter.result.support == 27 and limit == pytest.approx(0.25)


def test_a_class_named_unknown_turns_the_default_reject_off_with_a_note(tmp_path):
    from tests.device_runtime.bundle_factory import add_background

    bundle = add_background(write_bundle(tmp_path / "bundle"), np.full((3, DIM), DIM ** -0.5), {"1": 0.05, "5": 0.1})
    support = write_support(tmp_path / "support", ["unknown", "b", "c"])
    state = tmp_path / "state"
    assert runner.invoke(app, ["adapt", str(bundle), str(support), "--out", str(state)]).exit_code == 0
    image = next((support / "unknown").iterdir())
    result = runner.invoke(app, ["predict", str(state), str(image), "--json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert "threshold" not in record and "--reject is off" in result.stderr
    asked = runner.invoke(app, ["predict", str(state), str(image), "--reject", "auto"])  # asked for: refused
    assert asked.exit_code != 0 and "a class is named 'unknown'" in asked.stderr
