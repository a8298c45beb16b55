import json

import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from tests.cli.test_report_cli import one_line_error
from tests.png_check import assert_drawn_png
from tests.tolerance import assert_better, assert_equivalent

runner = CliRunner()
EPISODES = ["--ways", "5", "--shots", "1", "--queries", "3", "--episodes", "12", "--seed", "3", "--device", "cpu"]


def evaluate_json(*args: str) -> dict:
    result = runner.invoke(app, ["evaluate", *args, *EPISODES, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def mtl_bundle(tiny_mtl_run, tmp_path_factory):
    from mtl.exporters.bundle_export import export_bundle

    return export_bundle(tiny_mtl_run, tmp_path_factory.mktemp("bundle") / "mtl.mtlb", single_file=True).path


def test_a_meta_trained_checkpoint_plots_every_inner_step_and_the_curve_matches_evaluate(tiny_mtl_run, tmp_path):
    plotted = evaluate_json(str(tiny_mtl_run), "--plot", str(tmp_path / "steps.png"), "--steps", "5")
    assert_drawn_png(tmp_path / "steps.png", min_size=(400, 300))
    curve = plotted["curve"]
    assert [p["steps"] for p in curve] == [0, 1, 2, 3, 4, 5]
    for k in (0, 3):  # 3 = the default (as trained): the plain evaluation, through batch_outputs, not the curve
        plain = evaluate_json(str(tiny_mtl_run), *(["--steps", "0"] if k == 0 else []))
        assert len(plain["per_episode"]) == 12
        assert_equivalent(curve_scores(tiny_mtl_run, 5)[k], plain["per_episode"], margin=0.05)
    assert plotted["accuracy"] == curve[-1]["accuracy"] and plotted["plot"] == str(tmp_path / "steps.png")


def test_a_bundle_plots_device_steps_and_its_default_point_is_what_evaluate_reports(mtl_bundle, tmp_path):
    result = runner.invoke(app, ["evaluate", str(mtl_bundle), *EPISODES, "--plot", str(tmp_path / "b.png"), "-q"])
    assert result.exit_code == 0, result.output
    assert "plot: " in result.stdout and "at 0 steps" in result.stdout
    assert_drawn_png(tmp_path / "b.png", min_size=(400, 300))
    curve = evaluate_json(str(mtl_bundle), "--plot", str(tmp_path / "b.png"), "--steps", "4")["curve"]
    assert len(curve) == 5
    for k in (2, 3):  # 3 = the bundle's default steps
        plain = evaluate_json(str(mtl_bundle), *(["--steps", "2"] if k == 2 else []))
        assert_equivalent(curve_scores(mtl_bundle, 4)[k], plain["per_episode"], margin=0.05)


def curve_scores(path, steps: int) -> list[tuple[float, ...]]:
    """Per-episode accuracy after 0 … `steps` steps on the CLI's episodes, from the API the CLI calls."""
    from mtl.pipeline.train.evaluate import EvalConfig, evaluate_path

    cfg = EvalConfig(ways=5, shots=1, queries=3, episodes=12, seed=3)
    return [r.per_episode for r in evaluate_path(path, None, cfg, "cpu", steps=steps, curve=True).results]


def test_a_pretrained_checkpoint_plots_the_steps_its_bundle_takes(pretrained_run, tmp_path):
    plotted = evaluate_json(str(pretrained_run[0]), "--plot", str(tmp_path / "p.png"), "--steps", "3")
    assert_drawn_png(tmp_path / "p.png", min_size=(400, 300))
    assert [p["steps"] for p in plotted["curve"]] == [0, 1, 2, 3] and plotted["method"] == "adapt"


def test_a_method_that_takes_no_steps_has_nothing_to_plot(pretrained_run, tmp_path):
    result = runner.invoke(app, ["evaluate", str(pretrained_run[0]), *EPISODES, "--method", "prototype",
                                 "--plot", str(tmp_path / "p.png")])
    one_line_error(result, "--method prototype takes none", code=2)
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("target,culprit", [("steps.jpg", "ending in .png"), ("adir.png", "is a directory")])
def test_a_plot_path_that_cannot_be_a_png_is_refused_before_evaluating(tiny_mtl_run, tmp_path, target, culprit):
    (tmp_path / "adir.png").mkdir()
    result = runner.invoke(app, ["evaluate", str(tiny_mtl_run), *EPISODES, "--plot", str(tmp_path / target)])
    one_line_error(result, culprit, code=2)


def test_every_curve_point_gives_what_its_steps_added_over_step_0_on_the_same_episodes(mtl_bundle, tmp_path):
    """The gain is the mean of the paired per-episode differences, its CI theirs (1.96 σ / √E)."""
    import numpy as np

    curve = evaluate_json(str(mtl_bundle), "--plot", str(tmp_path / "g.png"), "--steps", "4")["curve"]
    scores = [np.asarray(s, np.float64) for s in curve_scores(mtl_bundle, 4)]
    assert curve[0]["gain"] == 0.0 and curve[0]["gain_ci95"] == 0.0
    eps = np.finfo(np.float64).eps
    for point, s in zip(curve, scores, strict=True):
        diff = s - scores[0]
        np.testing.assert_allclose(point["gain"], diff.mean(), rtol=64 * eps, atol=64 * eps)
        np.testing.assert_allclose(point["gain_ci95"], 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)),
                                   rtol=64 * eps, atol=64 * eps)


@pytest.mark.parametrize("target,value,culprit", [("bundle", "0.1", "--attack-epsilon needs a checkpoint"),
                                                  ("checkpoint", "-0.5", "--attack-epsilon must be ≥ 0")])
def test_an_attack_on_a_bundle_or_of_a_negative_size_is_one_line(mtl_bundle, tiny_mtl_run, target, value, culprit):
    path = mtl_bundle if target == "bundle" else tiny_mtl_run
    result = runner.invoke(app, ["evaluate", str(path), *EPISODES, "--attack-epsilon", value])
    one_line_error(result, culprit, code=2)


def test_the_adversarial_accuracy_is_reported_with_its_attack(tiny_mtl_run):
    clean = evaluate_json(str(tiny_mtl_run))
    attacked = evaluate_json(str(tiny_mtl_run), "--attack-epsilon", "0.5")
    assert attacked["attack"] == {"method": "fgsm", "epsilon": 0.5} and "attack" not in clean
    assert_better(clean["per_episode"], attacked["per_episode"])  # the same 12 episodes, paired
