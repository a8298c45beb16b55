"""Rich progress bars driven by the pipeline's `on_step(kind, done, total, info)` callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtl.cli.errors import stderr

LABELS = {"epoch": "epochs", "batch": "  batches", "episodes": "episodes", "iteration": "iterations",
          "validation": "validations"}


def _format(info: dict[str, Any]) -> str:
    parts = []
    for key, value in info.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key}={value}")
    return " ".join(parts)


@contextlib.contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Any]:
    """Yield an `on_step` callback that draws one bar per kind of loop on stderr."""
    if not enabled:
        yield lambda kind, done, total, info: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=stderr, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def on_step(kind: str, done: int, total: int, info: dict[str, Any]) -> None:
            if kind not in tasks:
                tasks[kind] = progress.add_task(LABELS.get(kind, kind), total=total, info="")
            task = tasks[kind]
            if done == 1 and kind in ("batch", "episodes"):
                progress.reset(task, total=total, info="")
            fields = {"info": _format(info)} if info else {}
            progress.update(task, completed=done, total=total, **fields)
            if kind in ("epoch", "validation") and info:
                step = "epoch" if kind == "epoch" else "iteration"
                progress.console.print(f"{step} {done}/{total}  {_format(info)}", highlight=False)

        yield on_step
