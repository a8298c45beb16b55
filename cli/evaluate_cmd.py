"""`mtl evaluate`: few-shot accuracy with a 95% confidence interval on held-out classes."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors
from mtl.cli.options import DataOpt, DeviceOpt, QuietOpt, enum_value
from mtl.cli.progress import progress_bars

if TYPE_CHECKING:
    from mtl.pipeline.train.evaluate import EvalConfig
    from mtl.pipeline.train.evaluate_ckpt import CheckpointEvaluation, StepCurve

console = Console()


class MethodChoice(StrEnum):
    auto = "auto"
    prototype = "prototype"
    finetune = "finetune"
    adapt = "adapt"


@handle_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint file or a run directory (its best).")],
    data: DataOpt = None,
    ways: Annotated[int, typer.Option(help="Classes per episode (N).")] = 5,
    shots: Annotated[int, typer.Option(help="Labelled examples per class (K).")] = 1,
    queries: Annotated[int, typer.Option(help="Test examples per class.")] = 15,
    episodes: Annotated[int, typer.Option(help="Episodes to average over.")] = 600,
    method: Annotated[MethodChoice, typer.Option(
        help="auto: what the checkpoint implies (adapt for meta-trained, prototype otherwise); prototype: "
             "nearest class mean; finetune: train a fresh head on the support set; adapt: the model's "
             "own inner loop.")] = MethodChoice.auto,
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
    with progress_bars(not (quiet or as_json)) as on_step:
        ev, curve = _run(checkpoint, data, cfg, enum_value(device) or "auto", on_step, steps, plot)
    if as_json:
        extra = {} if curve is None else {"plot": str(plot), "curve": [
            {"steps": k, "accuracy": x.accuracy, "ci95": x.ci95} for k, x in enumerate(curve.results)]}
        from mtl.device_runtime import jsonio

        typer.echo(jsonio.dumps({**ev.result.to_dict(), "data": ev.data, "classes": ev.classes,
                               "checkpoint": ev.checkpoint, **extra}))
        return
    _print(ev)
    if curve is not None:
        first, last = curve.results[0].accuracy, curve.results[-1].accuracy
        console.print(f"plot: {plot} (accuracy {100 * first:.2f}% at 0 steps → {100 * last:.2f}% at "
                      f"{len(curve.results) - 1})", highlight=False, soft_wrap=True)


def _run(checkpoint: Path, data: str | None, cfg: EvalConfig, device: str, on_step: Any, steps: int | None,
         plot: Path | None) -> tuple[CheckpointEvaluation, StepCurve | None]:
    """The evaluation, or with --plot the accuracy-vs-steps curve whose last point is that evaluation."""
    from mtl.pipeline.train.evaluate_ckpt import CheckpointEvaluation, evaluate_checkpoint, step_curve

    if plot is None:
        return evaluate_checkpoint(str(checkpoint), data, cfg, device, on_step, steps), None
    from mtl.device_runtime.atomic import check_png_target
    from mtl.pipeline.report.plots import require_matplotlib, save_step_plot

    check_png_target(plot, "--plot")
    require_matplotlib()
    curve = step_curve(str(checkpoint), data, cfg, device, on_step, steps)
    save_step_plot(curve, plot)
    return CheckpointEvaluation(curve.results[-1], curve.data, curve.classes, curve.checkpoint), curve


def _print(ev: CheckpointEvaluation) -> None:
    r = ev.result
    if r.metric == "mse":
        console.print(f"{r.shots}-shot sine regression: MSE {r.accuracy:.4f} ± {r.ci95:.4f} (95% CI, "
                      f"{r.episodes} tasks)", highlight=False)
        return
    console.print(f"{r.ways}-way {r.shots}-shot {r.method}: {100 * r.accuracy:.2f}% ± {100 * r.ci95:.2f} "
                  f"(95% CI, {r.episodes} episodes, {r.queries} queries/class) on {ev.classes} of {ev.data}",
                  highlight=False)
