import json

import pytest
from typer.testing import CliRunner

from mtl.cli.app import app
from mtl.pipeline.report.plots import training_curve
from mtl.pipeline.report.runs import read_run
from tests.pipeline.report.test_runs import meta_row, write_run
from tests.png_check import assert_drawn_png

runner = CliRunner()


def one_line_error(result, culprit: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert culprit in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_report_overlays_a_pretrain_and_a_meta_train_run(pretrained_run, tiny_mtl_run, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(pretrained_run[0]), str(tiny_mtl_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "lr.png", "report.md", "val_accuracy.png"]
    for name in ("loss.png", "lr.png", "val_accuracy.png"):
        assert_drawn_png(out / name, min_size=(800, 300))  # two panels: steps and wall-clock
    md = (out / "report.md").read_text()
    best = max(r["val_acc"] for r in map(json.loads, (pretrained_run[0] / "metrics.jsonl").read_text().splitlines()))
    assert f"| run | pretrain | synthetic:60 | conv4 | {100 * best:.2f}%" in md
    assert "| mtl-run | meta-train | synthetic:60 | mtl (first-order) on conv4 |" in md
    assert "## run" in md and "## mtl-run" in md and "| inner_steps | 3 |" in md
    assert "![learning rate](lr.png)" in md


def test_the_legend_names_every_overlaid_run_and_clashing_names_get_their_parent(tmp_path):
    a = write_run(tmp_path / "a" / "run", [meta_row(1, 1.0, lr=1e-3), meta_row(2, 2.0, lr=1e-3)])
    b = write_run(tmp_path / "b" / "run", [meta_row(1, 1.5, lr=2e-3)])
    from mtl.pipeline.report.summary import unique_names

    runs = [read_run(p, n) for p, n in zip([a, b], unique_names([a, b]), strict=True)]
    figure = training_curve(runs, "val_accuracy")
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a/run", "b/run"]


def test_a_run_without_lr_gets_no_lr_curve_not_an_error(tmp_path):
    old = write_run(tmp_path / "old", [meta_row(10, 5.0), meta_row(20, 9.0)])
    result = runner.invoke(app, ["report", str(old), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "rep" / "lr.png").exists()
    assert_drawn_png(tmp_path / "rep" / "loss.png")
    assert "no learning-rate plot" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("bad,culprit", [
    ("missing", "does not exist"),
    ("notrun", "has no config.json"),
    ("empty", "metrics.jsonl is empty"),
    ("corrupt", "line 1 is not a JSON object"),
])
def test_bad_run_directories_are_one_line_errors_and_nothing_is_written(pretrained_run, tmp_path, bad, culprit):
    (tmp_path / "notrun").mkdir()
    write_run(tmp_path / "empty", [], raw="")
    write_run(tmp_path / "corrupt", [], raw="\x00\x01garbage\n")
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(pretrained_run[0]), str(tmp_path / bad), "--out", str(out)])
    one_line_error(result, culprit)
    assert str(tmp_path / bad) in result.output.replace("\n", "")
    assert not out.exists()


def test_an_unrelated_non_empty_out_directory_is_not_replaced(pretrained_run, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["report", str(pretrained_run[0]), "--out", str(tmp_path / "docs")])
    one_line_error(result, "refusing to replace it", code=2)
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
