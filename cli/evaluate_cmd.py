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
    runs: Annotated[Path | None, typer.Option(
        "--runs", help="Score a BUNDLE on one-shot runs in the layout of Lake et al. 2015 (runNN/training, "
                       "runNN/test, class_labels.txt; a folder or a zip) through the device runtime.")] = None,
    attack_epsilon: Annotated[float, typer.Option(
        help="Adversarial accuracy: every query is an FGSM sample of this step (normalised input units) against "
             "the model adapted to its episode (a checkpoint; 0: clean).")] = 0.0,
    context_steps: Annotated[int | None, typer.Option(
        min=0, max=1000, help="A bundle that adapts a context vector (CAML): its steps before the head's (default: "
                              "the bundle's; 0: the extractor at context 0).")] = None,
    augment: Annotated[int, typer.Option(
        min=0, max=64, help="A bundle: each support image also contributes this many seeded affine variants, as "
                            "mtl adapt --augment does.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Few-shot accuracy (mean ± 95% CI over episodes) on classes the model never trained on."""
    from mtl.device_runtime.errors import ConfigError

    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be ≥ 0, got {steps}")
    if runs is not None:  # numpy + onnxruntime only: a device can run the protocol
        _lake_runs(checkpoint, runs, steps, as_json)
        return
    from mtl.pipeline.train.evaluate import EvalConfig

    cfg = EvalConfig(ways=ways, shots=shots, queries=queries, episodes=episodes, method=method.value, seed=seed,
                     attack_epsilon=attack_epsilon, context_steps=context_steps, augment=augment)
    attack = {"attack": {"method": "fgsm", "epsilon": attack_epsilon}} if attack_epsilon else {}
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

        typer.echo(jsonio.dumps({**evaluation_dict(ev), **attack, **({} if plot is None else {"plot": str(plot)})}))
        return
    _print(ev)
    if attack_epsilon:
        console.print(f"(adversarial: every query an FGSM sample, ε = {attack_epsilon:g}, against its adapted model)",
                      highlight=False, soft_wrap=True)
    if plot is not None:
        first, last = ev.results[0].mean, ev.results[-1].mean
        console.print(f"plot: {plot} (accuracy {100 * first:.2f}% at 0 steps → {100 * last:.2f}% at "
                      f"{ev.steps[-1]})", highlight=False, soft_wrap=True)


def _lake_runs(bundle: Path, runs: Path, steps: int | None, as_json: bool) -> None:
    """`--runs`: the 20-way within-alphabet one-shot protocol of Lake et al. on a bundle, on the device runtime."""
    from mtl.device_runtime import Bundle, jsonio
    from mtl.device_runtime.errors import ConfigError
    from mtl.device_runtime.lake_runs import evaluate_runs, read_runs

    if not (bundle.suffix == ".mtlb" or (bundle / "manifest.json").is_file()):
        raise ConfigError(f"--runs scores a bundle through the device runtime; export {bundle} first (mtl export)")
    result = evaluate_runs(Bundle.load(bundle), read_runs(runs), steps)
    if as_json:
        typer.echo(jsonio.dumps({"protocol": "lake2015-one-shot", "accuracy": result.mean, "ci95": result.ci95,
                                 "error": 1 - result.mean, "runs": len(result.per_run), "ways": result.ways,
                                 "per_run": list(result.per_run), "bundle": str(bundle), "data": str(runs)}))
        return
    console.print(f"{result.ways}-way one-shot runs (Lake et al. 2015): {100 * result.mean:.2f}% ± "
                  f"{100 * result.ci95:.2f} (95% CI, {len(result.per_run)} runs; error {100 * (1 - result.mean):.2f}%) "
                  f"on {runs}", highlight=False, soft_wrap=True)


def _print(ev: Evaluation) -> None:
    r = ev.result
    if r.metric == "mse":
        console.print(f"{r.shots}-shot sine regression: MSE {r.mean:.4f} ± {r.ci95:.4f} (95% CI, "
                      f"{r.episodes} tasks)", highlight=False)
        return
    how = f"{r.method}, {ev.steps[-1]} steps" if r.method in ("adapt", "bundle") else r.method
    console.print(f"{r.ways}-way {r.shots}-shot {how}: {100 * r.mean:.2f}% ± {100 * r.ci95:.2f} "
                  f"(95% CI, {r.episodes} episodes, {r.queries} queries/class; ECE {r.ece:.3f}) on {ev.classes} of "
                  f"{ev.data}",
                  highlight=False)
