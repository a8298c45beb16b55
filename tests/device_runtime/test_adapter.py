import hashlib
import json

import numpy as np
import pytest

import mtl.device_runtime.adapted_state as adapted_state
from mtl.device_runtime import Adapter, Bundle, BundleError, ConfigError, DataError
from mtl.device_runtime.errors import OutputError
from tests.device_runtime.bundle_factory import DIM, learned_head, write_bundle
from tests.tolerance import assert_float_close


def sgd_reference(weight, bias, features, labels, lr_weight, lr_bias, steps):
    """k first-order SGD steps of a linear softmax-cross-entropy head in float64: the graph's contract."""
    w, b, f = weight.astype(np.float64), bias.astype(np.float64), features.astype(np.float64)
    onehot = np.eye(len(w))[labels]
    losses = []
    for _ in range(steps):
        logits = f @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        losses.append(-np.mean(np.log((probs * onehot).sum(axis=1))))
        g = probs - onehot
        w, b = w - lr_weight * (g.T @ f / len(f)), b - lr_bias * g.mean(axis=0)
    return w, b, losses


def adapter_with(bundle, glyphs, classes=3, shots=3):
    adapter = Adapter(bundle)
    for c in range(classes):
        adapter.add_examples(f"class{c}", glyphs(c, shots))
    return adapter


@pytest.mark.parametrize("learned_lr", [False, True])
def test_adapt_lowers_the_loss_and_equals_k_numpy_sgd_steps(tmp_path, glyphs, learned_lr):
    bundle = Bundle.load(write_bundle(tmp_path / "b", learned_lr=learned_lr))
    adapter = adapter_with(bundle, glyphs)
    result = adapter.adapt(steps=4, lr=0.7)
    features = np.concatenate([bundle.embed(bundle.preprocess(glyphs(c))) for c in range(3)])
    labels = np.repeat(np.arange(3), 3)
    init = bundle.init
    if learned_lr:
        lr_w, lr_b = 0.7 * init["lr_weight"].astype(np.float64), 0.7 * init["lr_bias"].astype(np.float64)
    else:
        lr_w, lr_b = 0.7, 0.7
    head_weight, head_bias = learned_head()
    w0 = np.tile(head_weight, (3, 1))
    b0 = np.full(3, head_bias)
    w, b, losses = sgd_reference(w0, b0, features, labels, lr_w, lr_b, steps=4)
    weight, bias = adapter.head
    assert_float_close(weight, w)  # a float32 graph against a float64 reference
    assert_float_close(bias, b)
    assert_float_close(result.losses, losses)
    assert result.final_loss < result.loss_before
    assert list(result.losses) == sorted(result.losses, reverse=True)
    assert result.classes == ("class0", "class1", "class2") and result.support == 9 and result.steps == 4


def test_after_adaptation_the_support_images_are_classified_right(bundle_dir, glyphs):
    adapter = adapter_with(Adapter(Bundle.load(bundle_dir)).bundle, glyphs, classes=4)
    adapter.adapt(steps=10)
    images = [image for c in range(4) for image in glyphs(c)]
    labels, probs = adapter.predict(images)
    assert labels == [f"class{c}" for c in range(4) for _ in range(3)]
    assert probs.shape == (12, 4)
    assert_float_close(probs.sum(axis=1), np.ones(12))
    new_labels, _ = adapter.predict(glyphs(2, count=2, seed=7))  # unseen images of class 2
    assert new_labels == ["class2", "class2"]


@pytest.mark.parametrize("head_type, head_init", [("linear", "proto"), ("cosine", "proto"), ("linear", "zero")])
def test_the_head_starts_from_the_manifest_rule(tmp_path, glyphs, head_type, head_init):
    bundle = Bundle.load(write_bundle(tmp_path / "b", head_type=head_type, head_init=head_init))
    adapter = adapter_with(bundle, glyphs, classes=2)
    adapter.adapt(steps=0)
    means = np.stack([bundle.embed(bundle.preprocess(glyphs(c))).mean(axis=0) for c in range(2)])
    weight, bias = adapter.head
    if head_init == "zero":
        assert not weight.any() and not bias.any()
    elif head_type == "cosine":
        assert_float_close(weight, means)
        assert not bias.any()
    else:
        assert_float_close(weight, 2 * means)
        assert_float_close(bias, -(means**2).sum(axis=1))


def test_classes_added_later_are_learned_after_re_adapting(bundle_dir, glyphs):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs, classes=2)
    adapter.adapt(steps=10)
    adapter.add_examples("late", glyphs(3))
    with pytest.raises(ConfigError, match=r"\['late'\] were added after adapt"):
        adapter.predict(glyphs(3))
    result = adapter.adapt(steps=10)
    assert result.classes == ("class0", "class1", "late")
    assert adapter.predict(glyphs(3, count=2, seed=5))[0] == ["late", "late"]


def test_save_and_load_give_identical_predictions(bundle_dir, glyphs, tmp_path):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs)
    result = adapter.adapt()
    adapter.save(tmp_path / "adapted")
    assert sorted(p.name for p in (tmp_path / "adapted").iterdir()) == ["adapted.json", "bundle.mtlb", "state.npz"]
    meta = json.loads((tmp_path / "adapted" / "adapted.json").read_text())
    assert meta["classes"] == ["class0", "class1", "class2"] and meta["final_loss"] == result.final_loss
    loaded = Adapter.load(tmp_path / "adapted")
    queries = [image for c in range(3) for image in glyphs(c, seed=9)]
    labels, probs = adapter.predict(queries)
    loaded_labels, loaded_probs = loaded.predict(queries)
    assert labels == loaded_labels and np.array_equal(probs, loaded_probs)
    assert loaded.result == result and loaded.classes == adapter.classes
    loaded.add_examples("class3", glyphs(3))  # the support features come back too: it can learn more
    assert loaded.adapt(steps=10).classes[-1] == "class3"


def test_saving_again_replaces_the_adapted_state_atomically(bundle_dir, glyphs, tmp_path, monkeypatch):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs, classes=2)
    out = tmp_path / "out"
    adapter.adapt()
    adapter.save(out / "adapted")
    before = {p.name: p.read_bytes() for p in (out / "adapted").iterdir()}
    adapter.add_examples("class2", glyphs(2))
    adapter.adapt()

    def crash_midway(directory, files):
        (directory / "state.npz").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(adapted_state, "write_files", crash_midway)
    with pytest.raises(OutputError, match="cannot write .*adapted: disk full"):  # one line, nothing lost
        adapter.save(out / "adapted")
    assert {p.name: p.read_bytes() for p in (out / "adapted").iterdir()} == before
    assert [p.name for p in out.iterdir()] == ["adapted"]  # no temporary left behind
    monkeypatch.undo()
    adapter.save(out / "adapted")
    assert Adapter.load(out / "adapted").result.classes == ("class0", "class1", "class2")


def test_saving_refuses_to_replace_an_unrelated_directory(bundle_dir, glyphs, tmp_path):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs, classes=2)
    adapter.adapt()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="photos is a non-empty directory without adapted.json"):
        adapter.save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.png").read_bytes() == b"precious"


def test_usage_errors_are_clear(bundle_dir, glyphs, tmp_path):
    adapter = Adapter(Bundle.load(bundle_dir))
    with pytest.raises(DataError, match="no classes to adapt to"):
        adapter.adapt()
    with pytest.raises(ConfigError, match="nothing adapted yet"):
        adapter.predict(glyphs(0))
    with pytest.raises(DataError, match="class 'empty' has no images"):
        adapter.add_examples("empty", [])
    with pytest.raises(DataError, match="non-empty name"):
        adapter.add_examples("  ", glyphs(0))
    adapter.add_examples("only", glyphs(0))
    with pytest.raises(DataError, match="at least 2 classes, got 1 \\('only'\\)"):
        adapter.adapt()
    with pytest.raises(DataError, match="class 'only' was already added"):
        adapter.add_examples("only", glyphs(1))
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.png"):
        adapter.add_examples("other", [tmp_path / "broken.png"])
    adapter.add_examples("other", glyphs(1))
    with pytest.raises(ConfigError, match="steps"):
        adapter.adapt(steps=-1)
    with pytest.raises(ConfigError, match="lr"):
        adapter.adapt(lr=float("nan"))
    with pytest.raises(ConfigError, match="nothing adapted yet"):
        adapter.save(tmp_path / "adapted")


def test_a_diverging_adaptation_rolls_back_to_the_last_finite_state(bundle_dir, glyphs):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs)
    with pytest.raises(BundleError, match="diverged at step .* rolled back to the last finite state") as error:
        adapter.adapt(steps=6, lr=1e38)
    weight, bias = adapter.head
    assert np.isfinite(weight).all() and np.isfinite(bias).all()
    assert np.isfinite(adapter.result.final_loss) and adapter.result.steps < 6
    assert f"after {adapter.result.steps} step(s)" in str(error.value)
    labels, probs = adapter.predict(glyphs(0))
    assert len(labels) == 3 and np.isfinite(probs).all()


def test_a_tampered_adapted_state_is_refused(bundle_dir, glyphs, tmp_path):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs, classes=2)
    adapter.adapt()
    adapter.save(tmp_path / "adapted")
    with pytest.raises(BundleError, match="not an adapted state"):
        Adapter.load(tmp_path)
    copy = tmp_path / "adapted" / "bundle.mtlb"
    copy.write_bytes(copy.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="bundle.mtlb: sha256 .* does not match adapted.json"):
        Adapter.load(tmp_path / "adapted")


def test_the_adapted_state_arrays_are_checked(bundle_dir, glyphs, tmp_path):
    adapter = adapter_with(Bundle.load(bundle_dir), glyphs, classes=2)
    adapter.adapt()
    adapter.save(tmp_path / "adapted")
    state = tmp_path / "adapted" / "state.npz"
    np.savez(state, weight=np.zeros((3, DIM), np.float32), bias=np.zeros(2, np.float32),
             features=np.zeros((6, DIM), np.float32), labels=np.repeat([0, 1], 3))
    with pytest.raises(BundleError, match=r"state.npz: sha256 .* does not match adapted.json"):
        Adapter.load(tmp_path / "adapted")  # an edited state is caught by its hash first
    rehash(tmp_path / "adapted")
    with pytest.raises(BundleError, match=r"state.npz: weight has shape \(3, 8\), expected \(2, 8\)"):
        Adapter.load(tmp_path / "adapted")  # and one whose hash was forged too, by its shapes


def rehash(adapted):
    """Make adapted.json vouch for the state.npz that is there now (what an attacker who edits both would do)."""
    meta = json.loads((adapted / "adapted.json").read_text())
    meta["state_sha256"] = hashlib.sha256((adapted / "state.npz").read_bytes()).hexdigest()
    (adapted / "adapted.json").write_text(json.dumps(meta))


def test_non_finite_images_are_named_before_they_reach_a_graph(bundle_dir):
    adapter = Adapter(Bundle.load(bundle_dir))
    images = np.zeros((2, 1, 16, 16), np.float32)
    images[1, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match=r"class 'a': preprocessing gave non-finite values \(NaN or inf\) for image #1"):
        adapter.add_examples("a", images)
