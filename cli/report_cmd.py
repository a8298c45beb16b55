"""`mtl report`: training curves (PNG) and a markdown summary of one or several runs, overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors

console = Console()


@handle_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (mtl pretrain / meta-train --out).")],
    out: Annotated[Path, typer.Option("--out", help="Report directory to write (replaced as a whole).")],
) -> None:
    """Plot training loss, validation accuracy and learning rate of runs overlaid; summarise them in report.md."""
    from mtl.pipeline.report.summary import write_report

    result = write_report(runs, out)
    for run in result.runs:
        best, at = run.best
        console.print(f"{run.name}: best {run.val_label} {best:.4f} at {run.x_label} {at}", highlight=False)
    console.print(f"wrote {', '.join(result.files)} to {result.out}", highlight=False, soft_wrap=True)
