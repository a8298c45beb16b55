"""Classes added to and retired from an adapted state in place (`mtl adapt ADAPTED --add/--remove`, `mtl classes`):
the same head as adapting on the final support set at once, only the new images embedded, and a failed change
leaves the state as it was."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from mtl.device_runtime import Adapter, Bundle
from tests.device_runtime.bundle_factory import write_bundle, write_support
from tests.tolerance import assert_float_close

runner = CliRunner()


def _state_digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def setup(tmp_path):
    """A bundle, a support set of three classes, and the same images split: alpha + beta, then gamma."""
    bundle = write_bundle(tmp_path / "bundle", steps=5, lr=0.1)
    write_support(tmp_path / "all", ["alpha", "beta", "gamma"], shots=3)
    for part, names in (("first", ["alpha", "beta"]), ("second", ["gamma"])):
        for name in names:
            shutil.copytree(tmp_path / "all" / name, tmp_path / part / name)
    return tmp_path, bundle


def _head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return Adapter.load(path).head


def test_adding_classes_in_two_steps_gives_the_head_of_adapting_on_all_at_once(setup):
    tmp, bundle = setup
    assert _cli("adapt", bundle, tmp / "all", "--out", tmp / "once").exit_code == 0
    assert _cli("adapt", bundle, tmp / "first", "--out", tmp / "twice").exit_code == 0
    result = _cli("adapt", tmp / "twice", "--add", tmp / "second")
    assert result.exit_code == 0, result.output
    once, twice = _head(tmp / "once"), _head(tmp / "twice")
    assert Adapter.load(tmp / "twice").result.classes == ("alpha", "beta", "gamma")
    for a, b in zip(twice, once, strict=True):
        assert_float_close(a, b, dtype=np.float32)


def test_more_examples_of_a_class_and_a_removed_class_match_adapting_on_the_final_set(setup):
    _, bundle = setup
    bundle_obj = Bundle.load(bundle)
    rng, spec = np.random.default_rng(5), bundle_obj.input_spec
    images = {c: rng.standard_normal((4, spec.channels, spec.size, spec.size)).astype(np.float32) for c in "abc"}
    stepwise = Adapter(bundle_obj)
    stepwise.add_examples("a", images["a"][:2])
    stepwise.add_examples("b", images["b"])
    stepwise.add_examples("c", images["c"])
    stepwise.adapt()
    stepwise.add_examples("a", images["a"][2:], extend=True)  # only these two are embedded
    stepwise.remove_class("c")
    with pytest.raises(Exception, match="call adapt"):
        stepwise.predict(images["a"])  # the head is stale until adapted again
    stepwise.adapt()
    at_once = Adapter(bundle_obj)
    at_once.add_examples("a", images["a"])
    at_once.add_examples("b", images["b"])
    at_once.adapt()
    assert stepwise.examples == {"a": 4, "b": 4}
    for x, y in zip(stepwise.head, at_once.head, strict=True):
        assert_float_close(x, y, dtype=np.float32)


def test_classes_lists_examples_and_when_each_was_added(setup):
    tmp, bundle = setup
    assert _cli("adapt", bundle, tmp / "first", "--out", tmp / "state").exit_code == 0
    assert _cli("adapt", tmp / "state", "--add", tmp / "second").exit_code == 0
    result = _cli("classes", tmp / "state", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [(r["class"], r["examples"]) for r in records] == [("alpha", 3), ("beta", 3), ("gamma", 3)]
    assert all(r["added"].endswith("+00:00") for r in records)
    assert records[0]["added"] <= records[2]["added"]
    assert "gamma  3 example(s)  added 20" in _cli("classes", tmp / "state").output


@pytest.mark.parametrize("change", [["--remove", "delta"], ["--remove", "alpha"], []],
                         ids=["unknown-class", "one-class-left", "nothing-to-do"])
def test_a_failed_change_leaves_the_state_as_it_was_with_one_line(setup, change):
    tmp, bundle = setup
    assert _cli("adapt", bundle, tmp / "first", "--out", tmp / "state").exit_code == 0
    before = _state_digest(tmp / "state")
    result = _cli("adapt", tmp / "state", *change)
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert _state_digest(tmp / "state") == before


def test_add_and_remove_are_refused_for_a_bundle_and_support_for_a_state(setup):
    tmp, bundle = setup
    result = _cli("adapt", bundle, tmp / "first", "--out", tmp / "s", "--remove", "alpha")
    assert result.exit_code != 0 and "change an adapted state" in result.output
    assert _cli("adapt", bundle, tmp / "first", "--out", tmp / "state").exit_code == 0
    result = _cli("adapt", tmp / "state", tmp / "second")
    assert result.exit_code != 0 and "--add DIR" in result.output
