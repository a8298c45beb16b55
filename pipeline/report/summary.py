"""`mtl report`: training-curve PNGs of one or several runs overlaid, and report.md summarising each run.

The output directory is filled in a temporary sibling and swapped in whole (`replace_dir`), so an
error while reading a run or drawing leaves the previous report (or nothing), never half of one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mtl.pipeline.atomic import atomic_write_bytes, atomic_write_text, check_output, replace_dir
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.report.plots import CURVES, png, training_curve
from mtl.pipeline.report.runs import RunHistory, read_run

TITLES = {"loss": "training loss", "val_accuracy": "validation accuracy", "lr": "learning rate"}


@dataclass(frozen=True)
class Report:
    out: Path
    runs: list[RunHistory]
    files: list[str]  # written into `out`, report.md last


def write_report(paths: list[Path], out: Path) -> Report:
    """Read every run (all must be valid before anything is written), draw the curves, write report.md."""
    if not paths:
        raise ConfigError("mtl report needs at least one run directory")
    check_output(out, "--out", directory=True, marker="report.md")
    runs = [read_run(p, name) for p, name in zip(paths, unique_names(paths), strict=True)]
    if out.resolve() in {r.path.resolve() for r in runs}:
        raise ConfigError(f"--out {out} is one of the runs; choose a separate report directory")
    drawn = {f"{metric}.png": training_curve(runs, metric) for metric in CURVES}
    figures = {name: png(figure) for name, figure in drawn.items() if figure is not None}

    def fill(tmp: Path) -> None:
        for name, data in figures.items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_text(tmp / "report.md", markdown(runs, list(figures)))

    replace_dir(out, fill, marker="report.md")
    return Report(out, runs, [*figures, "report.md"])


def unique_names(paths: list[Path]) -> list[str]:
    """Legend names: each run directory's name, with its parent where two runs share a name, then a number."""
    names = [p.resolve().name for p in paths]
    clashes = Counter(names)
    names = [f"{p.resolve().parent.name}/{n}" if clashes[n] > 1 else n for p, n in zip(paths, names, strict=True)]
    seen: Counter[str] = Counter()
    unique = []
    for n in names:
        seen[n] += 1
        unique.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return unique


def markdown(runs: list[RunHistory], figures: list[str]) -> str:
    """The summary table (best validation and where, final loss, total time), the figures, each run's config."""
    lines = ["# Training report", "",
             "| run | kind | data | model | best validation | at | final training loss | total time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_summary_row(r) for r in runs]
    lines += [""] + [f"![{TITLES[Path(f).stem]}]({f})" for f in figures]
    if not any(r.lr is not None for r in runs):
        lines += ["", "No run logged its learning rate (runs made before it was recorded): no learning-rate plot."]
    for run in runs:
        lines += ["", f"## {run.name}", "", f"`{run.path}` — {run.kind}, {len(run.x)} validation rows", "",
                  "| option | value |", "| --- | --- |"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in sorted(run.config.items())]
    return "\n".join(lines) + "\n"


def _summary_row(run: RunHistory) -> str:
    best, at = run.best
    ci = run.val_ci95[run.x.index(at)]
    ci_text = f" ± {100 * ci:.2f}" if ci == ci else ""  # NaN: a single validation episode
    shown = f"MSE {-best:.4g}" if run.config.get("data") == "sinusoid" else f"{100 * best:.2f}%{ci_text}"
    model = run.config.get("backbone", "?")
    if run.kind == "meta-train":
        order = " (first-order)" if run.config.get("first_order") else ""
        model = f"{run.config.get('algorithm', '?')}{order} on {model}"
    total = "not recorded" if run.wall is None else _duration(run.wall[-1])
    return (f"| {run.name} | {run.kind} | {_cell(run.config.get('data', '?'))} | {model} | {shown} | "
            f"{run.x_label} {at} | {run.train_loss[-1]:.4g} | {total} |")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _cell(value: object) -> str:
    """A config value as a table cell (pipes escaped, so a path with `|` cannot break the table)."""
    text = "—" if value is None else str(list(value) if isinstance(value, tuple) else value)
    return text.replace("|", "\\|")
