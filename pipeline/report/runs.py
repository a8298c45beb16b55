"""Read a run directory (config.json + metrics.jsonl, as `pipeline.train.run_dir` writes them) into curves.

Both trainers write one row per validation: pretrain per epoch (`val_acc`, `seconds` of that epoch),
meta-train every `val_every` iterations (`val_score`, `seconds` since the process started, so a
resumed run starts counting again). Rows written before the learning rate was logged have no `lr`:
such a run simply has no learning-rate curve.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl.pipeline.errors import CheckpointError


@dataclass(frozen=True)
class RunHistory:
    """The curves of one run; `x` counts epochs (pretrain) or iterations (meta-train)."""

    name: str
    path: Path
    kind: str  # "pretrain" | "meta-train"
    config: dict[str, Any]
    x: list[int]
    train_loss: list[float]
    val: list[float]  # validation accuracy; −MSE for sine-wave regression
    val_ci95: list[float]
    lr: list[float] | None  # None: not recorded by the run
    wall: list[float] | None  # cumulative wall-clock seconds at each row; None: not recorded

    @property
    def x_label(self) -> str:
        return "epoch" if self.kind == "pretrain" else "iteration"

    @property
    def val_label(self) -> str:
        return "validation −MSE" if self.config.get("data") == "sinusoid" else "validation accuracy"

    @property
    def best(self) -> tuple[float, int]:
        """(best validation value, the epoch or iteration where it was reached — the first such)."""
        i = max(range(len(self.val)), key=lambda j: (self.val[j], -j))
        return self.val[i], self.x[i]


def read_run(path: str | Path, name: str | None = None) -> RunHistory:
    """A run directory → its curves; a missing, foreign or corrupt directory raises `CheckpointError` naming it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a run directory (it is a file)")
    config, rows = _read_json(path / "config.json"), _read_rows(path / "metrics.jsonl")
    kind = "meta-train" if "iteration" in rows[0] or "algorithm" in config else "pretrain"
    step_key, val_key = ("epoch", "val_acc") if kind == "pretrain" else ("iteration", "val_score")
    numbers = {key: _column(path, rows, key) for key in (step_key, "train_loss", val_key)}
    lr = _column(path, rows, "lr") if all("lr" in r for r in rows) else None
    seconds = _column(path, rows, "seconds") if all("seconds" in r for r in rows) else None
    wall = None if seconds is None else (_cumulative(seconds) if kind == "pretrain" else _across_resumes(seconds))
    ci95 = [float(r.get("val_ci95", math.nan)) for r in rows]
    return RunHistory(name or path.resolve().name, path, kind, config, [int(v) for v in numbers[step_key]],
                      numbers["train_loss"], numbers[val_key], ci95, lr, wall)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a run directory: it has no {path.name}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl; an empty file or a line that is not a JSON object is named by its number."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a run directory: it has no {path.name}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise CheckpointError(f"{path} line {number} is not a JSON object (corrupt metrics)")
        rows.append(row)
    if not rows:
        raise CheckpointError(f"{path} is empty: the run has not logged a validation yet")
    return rows


def _column(path: Path, rows: list[dict[str, Any]], key: str) -> list[float]:
    """One metric per row as floats; a row without it, or with a non-number, is named."""
    values = []
    for number, row in enumerate(rows, 1):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CheckpointError(f"{path / 'metrics.jsonl'} row {number} has no numeric {key!r}")
        values.append(float(value))
    return values


def _cumulative(seconds: list[float]) -> list[float]:
    """Per-row durations → elapsed time at the end of each row."""
    total, out = 0.0, []
    for s in seconds:
        total += s
        out.append(total)
    return out


def _across_resumes(seconds: list[float]) -> list[float]:
    """Time since each process started → time since the run started: a drop means a resume, which
    continues from the last time the previous process logged (time lost to the crash is not known)."""
    offset, previous, out = 0.0, 0.0, []
    for s in seconds:
        if s < previous:
            offset += previous
        previous = s
        out.append(offset + s)
    return out
