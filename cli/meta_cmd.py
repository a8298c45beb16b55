"""`mtl meta-train`: learn an initialisation that adapts to new classes in a few SGD steps."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mtl.cli.errors import handle_errors
from mtl.cli.options import (
    BackboneOptionOpt,
    CalibrateOpt,
    ConfigOpt,
    DataOpt,
    DeviceOpt,
    OutOpt,
    QuietOpt,
    ResumeOpt,
    SplitByOpt,
    SplitOpt,
    enum_value,
    fractions,
    key_values,
)
from mtl.cli.progress import progress_bars
from mtl.cli.train_cmd import BackboneOpt, HeadChoice, calibration_line
from mtl.device_runtime.schema import HEAD_INITS
from mtl.pipeline.algorithms import algorithm_names

console = Console()


# The choices come from the one place that defines them: the algorithm modules' names (listed without importing
# torch, so `mtl meta-train --help` works on a device install) and the bundle schema's head-init rules.
AlgorithmChoice = StrEnum("AlgorithmChoice", [(name.replace("-", "_"), name) for name in algorithm_names()])
HeadInitChoice = StrEnum("HeadInitChoice", [(rule, rule) for rule in HEAD_INITS])
AdaptChoice = StrEnum("AdaptChoice", [("head", "head"), ("all", "all")])


Int = Annotated[int | None, typer.Option()]


@handle_errors
def meta_train(
    data: DataOpt = None,
    algorithm: Annotated[AlgorithmChoice | None, typer.Option(help="Meta-learning method.")] = None,
    init: Annotated[Path | None, typer.Option(help="Pretrained checkpoint (`mtl pretrain`) to start from.")] = None,
    backbone: BackboneOpt = None,
    backbone_option: BackboneOptionOpt = None,
    head: Annotated[HeadChoice | None, typer.Option(help="Classifier head.")] = None,
    head_init: Annotated[HeadInitChoice | None, typer.Option(help="Per-task head initialisation.")] = None,
    adapt: Annotated[AdaptChoice | None, typer.Option(help="What the inner loop adapts.")] = None,
    ways: Annotated[int | None, typer.Option(help="Classes per task (N).")] = None,
    shots: Annotated[int | None, typer.Option(help="Support examples per class (K).")] = None,
    queries: Annotated[int | None, typer.Option(help="Query examples per class.")] = None,
    meta_batch: Annotated[int | None, typer.Option(help="Tasks per outer step.")] = None,
    inner_steps: Annotated[int | None, typer.Option(help="Inner-loop SGD steps.")] = None,
    inner_lr: Annotated[float | None, typer.Option(help="Inner-loop step size.")] = None,
    outer_lr: Annotated[float | None, typer.Option(help="Outer-loop learning rate (Reptile: ε).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Outer steps.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Stop once training has run this long (validated and "
                                                      "checkpointed): a budget in time, not iterations.")] = None,
    max_cpu_seconds: Annotated[float | None, typer.Option(
        help="Stop once this process has used this much CPU time (all threads): a time budget that stays "
             "fair when other jobs share the cores.")] = None,
    first_order: Annotated[bool | None, typer.Option("--first-order/--second-order",
                                                     help="Drop second-order terms (FOMAML).")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile",
                                                 help="torch.compile the meta-step (default: on CUDA).")] = None,
    chunk: Annotated[int | None, typer.Option(help="Tasks per vmapped call (0 = whole meta-batch).")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="An option of the algorithm as KEY=VALUE (repeatable), e.g. joint's beta=0.5 and "
                               "meta-learner=maml|reptile; README lists each algorithm's options.")] = None,
    hard_tasks: Annotated[bool | None, typer.Option("--hard-tasks/--no-hard-tasks",
                                                    help="Extra meta-batch of each task's worst class.")] = None,
    rotations: Annotated[bool | None, typer.Option("--rotations/--no-rotations",
                                                   help="Add 90/180/270° rotations as new classes.")] = None,
    val_every: Annotated[int | None, typer.Option(help="Validate and checkpoint every N iterations.")] = None,
    val_episodes: Annotated[int | None, typer.Option(help="Validation episodes.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation and task sampling.")] = None,
    split: SplitOpt = None,
    split_by: SplitByOpt = None,
    calibrate_episodes: CalibrateOpt = None,
    nproc: Annotated[int | None, typer.Option(help="Processes on this machine (one GPU each on CUDA); each "
                                                   "takes an equal share of every meta-batch.")] = None,
    out: OutOpt = None,
    device: DeviceOpt = None,
    config: ConfigOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Meta-train an initialisation that adapts in a few steps (every --algorithm), tasks batched with vmap."""
    from mtl.pipeline.config import resolve_config
    from mtl.pipeline.train.meta_train import MetaTrainConfig
    from mtl.pipeline.train.meta_train import meta_train_job as run

    cfg = resolve_config(
        MetaTrainConfig, config, data=data, algorithm=enum_value(algorithm), init=None if init is None else str(init),
        backbone=backbone, head=enum_value(head), head_init=enum_value(head_init),
        adapt=enum_value(adapt), ways=ways, shots=shots, queries=queries, meta_batch=meta_batch,
        inner_steps=inner_steps, inner_lr=inner_lr, outer_lr=outer_lr, iterations=iterations, max_seconds=max_seconds,
        max_cpu_seconds=max_cpu_seconds,
        first_order=first_order, compile=compile, chunk=chunk, options=key_values(option, "--option"),
        backbone_options=key_values(backbone_option, "--backbone-option", parse_json=True),
        hard_tasks=hard_tasks, rotations=rotations, val_every=val_every, val_episodes=val_episodes, seed=seed,
        split=fractions(split), split_by=split_by, calibrate_episodes=calibrate_episodes,
        nproc=nproc, out=None if out is None else str(out), device=enum_value(device), resume=resume or None)
    lead = os.environ.get("RANK", "0") == "0"  # under torchrun, process 0 alone draws and reports
    with progress_bars(not quiet and lead) as on_step:
        result = run(cfg, on_step)
    if not lead:
        return
    what = "validation MSE" if cfg.data == "sinusoid" else f"validation {cfg.ways}-way {cfg.shots}-shot accuracy"
    value = -result.best_val if cfg.data == "sinusoid" else 100 * result.best_val
    console.print(f"meta-trained {cfg.algorithm} for {result.iterations} iterations: best {what} "
                  f"{value:.{4 if cfg.data == 'sinusoid' else 2}f}{'' if cfg.data == 'sinusoid' else '%'} → "
                  f"{result.run_dir}/best.safetensors", highlight=False)
    if result.calibration is not None:
        console.print(calibration_line(result.calibration), highlight=False)
