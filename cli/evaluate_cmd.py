"""`mtl evaluate`: few-shot accuracy with a 95% confidence interval on held-out classes."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors
from mtl.cli.options import DataOpt, DeviceOpt, QuietOpt, enum_value
from mtl.cli.progress import progress_bars

if TYPE_CHECKING:
    from mtl.pipeline.train.evaluate import Evaluation

console = Console()


MethodChoice = StrEnum("MethodChoice", [(m, m) for m in ("auto", "prototype", "finetune", "adapt")])


@handle_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file or a run directory (its best).")],
    data: DataOpt = None,
    ways: Annotated[int, typer.Option(help="Classes per episode (N).")] = 5,
    shots: Annotated[int, typer.Option(help="Labelled examples per class (K).")] = 1,
    queries: Annotated[int, typer.Option(help="Test examples per class.")] = 15,
    episodes: Annotated[int, typer.Option(help="Episodes to average over.")] = 600,
    method: Annotated[MethodChoice, typer.Option(
        help="auto: what the model does as trained — its inner loop, or for a pretrained checkpoint the "
             "adaptation its exported bundle runs; prototype: nearest class mean; finetune: train a fresh head "
             "on the support set; adapt: the adaptation steps (as auto).")] = MethodChoice.auto,
    steps: Annotated[int | None, typer.Option(help="Inner-loop steps for --method adapt (default: as "
                                              "trained); with --plot, the last step count drawn.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw accuracy vs adaptation steps (0 … --steps) "
                                              "with its 95% CI band into this PNG, on the same episodes (a "
                                              "meta-trained checkpoint or a bundle; needs matplotlib).")] = None,
    seed: Annotated[int, typer.Option(help="Episode seed: the same seed gives the same episodes.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Few-shot accuracy (mean ± 95% CI over episodes) on classes the model never trained on."""
    from mtl.pipeline.errors import ConfigError
    from mtl.pipeline.train.evaluate import EvalConfig

    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be ≥ 0, got {steps}")
    cfg = EvalConfig(ways=ways, shots=shots, queries=queries, episodes=episodes, method=method.value, seed=seed)
    if plot is not None:
        from mtl.device_runtime.atomic import check_png_target
        from mtl.pipeline.report.plots import require_matplotlib

        check_png_target(plot, "--plot")
        require_matplotlib()
    from mtl.pipeline.train.evaluate import evaluate_path, evaluation_dict

    with progress_bars(not (quiet or as_json)) as on_step:
        ev = evaluate_path(checkpoint, data, cfg, enum_value(device) or "auto", steps, plot is not None, on_step)
    if plot is not None:
        from mtl.pipeline.report.plots import save_step_plot

        save_step_plot(ev, plot)
    if as_json:
        from mtl.device_runtime import jsonio

        typer.echo(jsonio.dumps({**evaluation_dict(ev), **({} if plot is None else {"plot": str(plot)})}))
        return
    _print(ev)
    if plot is not None:
        first, last = ev.results[0].mean, ev.results[-1].mean
        console.print(f"plot: {plot} (accuracy {100 * first:.2f}% at 0 steps → {100 * last:.2f}% at "
                      f"{ev.steps[-1]})", highlight=False, soft_wrap=True)


def _print(ev: Evaluation) -> None:
    r = ev.result
    if r.metric == "mse":
        console.print(f"{r.shots}-shot sine regression: MSE {r.mean:.4f} ± {r.ci95:.4f} (95% CI, "
                      f"{r.episodes} tasks)", highlight=False)
        return
    how = f"{r.method}, {ev.steps[-1]} steps" if r.method in ("adapt", "bundle") else r.method
    console.print(f"{r.ways}-way {r.shots}-shot {how}: {100 * r.mean:.2f}% ± {100 * r.ci95:.2f} "
                  f"(95% CI, {r.episodes} episodes, {r.queries} queries/class) on {ev.classes} of {ev.data}",
                  highlight=False)
