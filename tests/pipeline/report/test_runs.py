import json
import re

import pytest

from mtl.pipeline.errors import CheckpointError
from mtl.pipeline.report.runs import read_run


def write_run(path, rows, config=None, raw=None):
    """A run directory as the trainers write it (`raw` replaces metrics.jsonl's text)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"algorithm": "maml", "data": "synthetic:60"}))
    text = raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows)
    (path / "metrics.jsonl").write_text(text)
    return path


def meta_row(iteration, seconds, **extra):
    return {"epoch": iteration, "iteration": iteration, "train_loss": 1.0 / iteration, "val_score": 0.1 * iteration,
            "val_ci95": 0.01, "seconds": seconds, **extra}


def test_a_pretrain_run_reads_epochs_learning_rate_and_cumulative_time(pretrained_run):
    run = read_run(pretrained_run[0])
    assert run.kind == "pretrain" and run.x == [1, 2, 3, 4, 5, 6] and run.name == "run"
    assert run.lr is not None and run.lr[-1] < run.lr[0]  # cosine decay, as logged
    assert run.wall == sorted(run.wall) and run.wall[-1] > run.wall[0] > 0  # per-epoch seconds accumulated
    assert run.best[0] == max(run.val) and run.val[run.x.index(run.best[1])] == run.best[0]


def test_a_meta_train_run_from_before_lr_was_logged_has_no_lr_curve_and_resumes_keep_time_running(tmp_path):
    rows = [meta_row(10, 5.0), meta_row(20, 9.0), meta_row(30, 2.0), meta_row(40, 6.0)]  # resumed after 20
    run = read_run(write_run(tmp_path / "old", rows))
    assert run.kind == "meta-train" and run.x == [10, 20, 30, 40] and run.lr is None
    assert run.wall == [5.0, 9.0, 11.0, 15.0]
    assert run.best == (pytest.approx(4.0), 40)


def test_the_learning_rate_is_read_when_every_row_has_it(tmp_path):
    run = read_run(write_run(tmp_path / "new", [meta_row(1, 1.0, lr=1e-3), meta_row(2, 2.0, lr=5e-4)]))
    assert run.lr == [1e-3, 5e-4]


@pytest.mark.parametrize("make,culprit", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: (d / "file.txt").write_text("x") and d / "file.txt", "is not a run directory (it is a file)"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no config.json"),
    (lambda d: write_run(d / "r", [], raw=""), "metrics.jsonl is empty"),
    (lambda d: write_run(d / "r", [], raw=json.dumps(meta_row(1, 1.0)) + "\n{\"epoch\": 2, \"trai"),
     "metrics.jsonl line 2 is not a JSON object"),
    (lambda d: write_run(d / "r", [{"epoch": 1, "iteration": 1, "val_score": 0.5}]),
     "row 1 has no numeric 'train_loss'"),
])
def test_bad_run_directories_are_named_in_one_line(tmp_path, make, culprit):
    with pytest.raises(CheckpointError, match=re.escape(culprit)) as info:
        read_run(make(tmp_path))
    assert "\n" not in str(info.value)
