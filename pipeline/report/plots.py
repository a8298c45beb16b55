"""Figures (matplotlib, Agg, rendered by `png`): training curves of overlaid runs, accuracy vs adaptation steps.

matplotlib is imported inside the functions (it is in the `train` extra and slow to import), and
figures are built as `Figure` objects without pyplot's global state, so nothing opens a window and
nothing leaks between calls. Callers write the bytes atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mtl.pipeline.atomic import atomic_write_bytes
from mtl.pipeline.report.runs import RunHistory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mtl.pipeline.train.evaluate import Evaluation

# metric name → (what to read from a run, y-axis label); a run whose reader gives None is left out
CURVES: dict[str, tuple[Callable[[RunHistory], list[float] | None], str]] = {
    "loss": (lambda r: r.train_loss, "training loss"),
    "val_accuracy": (lambda r: r.val, "validation accuracy"),
    "lr": (lambda r: r.lr, "learning rate"),
}


def require_matplotlib() -> None:
    """Fail at once, not after a long evaluation, when matplotlib (the `train` extra) is missing."""
    import matplotlib  # noqa: F401


def _figure(columns: int) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(5.5 * columns, 4.0), dpi=100, layout="constrained")


def png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _x_label(runs: Sequence[RunHistory]) -> str:
    labels = sorted({r.x_label for r in runs})
    return labels[0] if len(labels) == 1 else "epoch (pretrain) / iteration (meta-train)"


def training_curve(runs: Sequence[RunHistory], metric: str) -> Figure | None:
    """One metric of every run that recorded it, against epochs/iterations and (where every such run
    recorded it) wall-clock time; legend = run name. None when no run recorded the metric."""
    read, y_label = CURVES[metric]
    drawn = [r for r in runs if read(r) is not None]
    if not drawn:
        return None
    if metric == "val_accuracy":
        y_label = " / ".join(sorted({r.val_label for r in drawn}))
    timed = all(r.wall is not None for r in drawn)
    figure = _figure(2 if timed else 1)
    axes = figure.subplots(1, 2 if timed else 1, squeeze=False)[0]
    for ax, use_wall in zip(axes, (False, True), strict=False):
        for run in drawn:
            x = run.wall if use_wall else run.x
            _plot_run(ax, x, read(run), run, band=metric == "val_accuracy")
        ax.set_xlabel("wall-clock seconds" if use_wall else _x_label(drawn))
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if metric == "lr":
        for ax in axes:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.suptitle(f"{y_label} ({len(drawn)} run{'s' if len(drawn) != 1 else ''})")
    return figure


def _plot_run(ax: Axes, x: list[float], y: list[float], run: RunHistory, band: bool) -> None:
    """A line with markers (a run may have a single row); validation gets its 95% CI band where logged."""
    line = ax.plot(x, y, marker="o", markersize=3, label=run.name)[0]
    ci = run.val_ci95
    if band and all(math.isfinite(c) for c in ci):
        ax.fill_between(x, [v - c for v, c in zip(y, ci, strict=True)], [v + c for v, c in zip(y, ci, strict=True)],
                        color=line.get_color(), alpha=0.15, linewidth=0)


def steps_curve(steps: Sequence[int], mean: Sequence[float], ci95: Sequence[float], title: str,
                y_label: str = "query accuracy", reliability: Sequence[dict[str, float]] = ()) -> Figure:
    """Accuracy after 0 … S adaptation steps (the mean with its 95% confidence band) and, given the bins of the
    last step, its reliability diagram (accuracy against confidence of the top-1 probability)."""
    figure = _figure(2 if reliability else 1)
    axes = figure.subplots(1, 2 if reliability else 1, squeeze=False)[0]
    ax = axes[0]
    ax.plot(steps, mean, marker="o", markersize=4, label="mean over episodes")
    ax.fill_between(steps, [m - c for m, c in zip(mean, ci95, strict=True)],
                    [m + c for m, c in zip(mean, ci95, strict=True)], alpha=0.25, linewidth=0, label="95% CI")
    ax.set_xlabel("adaptation steps (0 = initialisation)")
    ax.set_ylabel(y_label)
    if len(steps) <= 21:  # every step count labelled; beyond that matplotlib's own ticks read better
        ax.set_xticks(list(steps))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")
    if reliability:
        _reliability(axes[1], reliability, steps[-1])
    return figure


def _reliability(ax: Axes, bins: Sequence[dict[str, float]], steps: int) -> None:
    """Bars of accuracy per confidence bin (width = bin), the diagonal of perfect calibration, and the counts."""
    width = 1.0 / len(bins)
    lefts = [i * width for i in range(len(bins))]
    used = [(x, b) for x, b in zip(lefts, bins, strict=True) if b["count"]]
    ax.bar([x for x, _ in used], [b["accuracy"] for _, b in used], width=width, align="edge", alpha=0.7,
           edgecolor="black", label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    total = sum(b["count"] for b in bins)
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins) if total else math.nan
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability after {steps} steps: ECE {ece:.3f} ({len(bins)} bins, {total} queries)",
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")


def save_step_plot(curve: Evaluation, path: Path) -> None:
    """`mtl evaluate --plot`: accuracy against adaptation steps and the reliability diagram of the last step,
    written atomically to `path`."""
    from mtl.pipeline.train.evaluate import gains

    r = curve.results[-1]
    gain, gain_ci = gains(curve)[-1]
    paired = f"; step {curve.steps[-1]} − step 0: {100 * gain:+.2f} ± {100 * gain_ci:.2f} points (paired)" \
        if len(curve.results) > 1 and math.isfinite(gain_ci) else ""
    title = (f"{Path(curve.source).name}: {r.ways}-way {r.shots}-shot, {r.episodes} episodes, "
             f"{r.queries} queries/class{paired}\n{curve.classes} of {curve.data}")
    figure = steps_curve(list(curve.steps), [x.mean for x in curve.results],
                         [x.ci95 if math.isfinite(x.ci95) else 0.0 for x in curve.results], title,
                         reliability=r.reliability)
    atomic_write_bytes(path, png(figure))
