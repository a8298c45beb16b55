"""`mtl evaluate`: few-shot accuracy with a 95% confidence interval on held-out classes."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.errors import handle_errors
from cli.options import DataOpt, DeviceOpt, QuietOpt, enum_value
from cli.progress import progress_bars

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
                                              "trained).")] = None,
    seed: Annotated[int, typer.Option(help="Episode seed: the same seed gives the same episodes.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Few-shot accuracy (mean ± 95% CI over episodes) on classes the model never trained on."""
    from pipeline.errors import ConfigError
    from pipeline.train.evaluate import EvalConfig
    from pipeline.train.evaluate_ckpt import evaluate_checkpoint

    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be ≥ 0, got {steps}")
    cfg = EvalConfig(ways=ways, shots=shots, queries=queries, episodes=episodes, method=method.value, seed=seed)
    with progress_bars(not (quiet or as_json)) as on_step:
        ev = evaluate_checkpoint(str(checkpoint), data, cfg, enum_value(device) or "auto", on_step, steps)
    if as_json:
        typer.echo(json.dumps({**ev.result.to_dict(), "data": ev.data, "classes": ev.classes,
                               "checkpoint": ev.checkpoint}))
        return
    r = ev.result
    if r.metric == "mse":
        console.print(f"{r.shots}-shot sine regression: MSE {r.accuracy:.4f} ± {r.ci95:.4f} (95% CI, "
                      f"{r.episodes} tasks)", highlight=False)
        return
    console.print(f"{r.ways}-way {r.shots}-shot {r.method}: {100 * r.accuracy:.2f}% ± {100 * r.ci95:.2f} "
                  f"(95% CI, {r.episodes} episodes, {r.queries} queries/class) on {ev.classes} of {ev.data}",
                  highlight=False)
