"""Meta-training: one loop for every algorithm (the algorithm is a parameter).

Each iteration draws a meta-batch of tasks on the training device and hands it to the algorithm's
`update` (vmapped over tasks); every `val_every` iterations the model is evaluated on validation
classes with the same inner loop, metrics are appended, `last` is saved (model, optimisers,
sampler RNG: exact resume) and `best` is kept.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from mtl.pipeline.algorithms import get_algorithm
from mtl.pipeline.config import config_to_dict, option_defaults
from mtl.pipeline.errors import ConfigError
from mtl.pipeline.meta.algorithm import Algorithm
from mtl.pipeline.meta.batch import Hyper
from mtl.pipeline.meta.learner import LearnerSpec, MetaLearner
from mtl.pipeline.models import BACKBONES
from mtl.pipeline.train.calibrate import Calibration, calibrate_checkpoint
from mtl.pipeline.train.checkpoint import (
    Checkpoint,
    flatten_optimizer,
    load_checkpoint,
    load_weights,
    restore_optimizer,
    save_checkpoint,
)
from mtl.pipeline.train.common import StepCallback, no_progress, resolve_device
from mtl.pipeline.train.distributed import FollowerRunDir, Ranks, check_gpus, launch
from mtl.pipeline.train.evaluate import EvalConfig
from mtl.pipeline.train.meta_setup import Setup, prepare
from mtl.pipeline.train.run_dir import RunDir


@dataclass(frozen=True)
class MetaTrainConfig:
    """Options of `mtl meta-train` (saved into the run directory and every checkpoint)."""

    data: str = "synthetic"
    out: str = "runs/meta"
    algorithm: str = "maml"
    init: str | None = None
    backbone: str = "conv4"
    backbone_options: dict[str, Any] = field(default_factory=dict)  # without --init; with it, the checkpoint's
    head: str = "linear"
    head_init: str = "learned"
    adapt: str | None = None
    ways: int = 5
    shots: int = 1
    queries: int = 15
    meta_batch: int = 16
    inner_steps: int = 5
    inner_lr: float = 0.4
    outer_lr: float = 1e-3
    iterations: int = 1000
    first_order: bool = False
    compile: bool | None = None  # None: on CUDA (the fastest correct path there), off on CPU (compiling costs more)
    chunk: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the algorithm's own (Algorithm.Options), by name
    hard_tasks: bool = False
    image_size: int | None = None
    rotations: bool = False
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # without --init; with it, the checkpoint's split
    split_by: str = "auto"
    split_seed: int = 0
    seed: int = 0
    val_every: int = 100
    val_episodes: int = 100
    device: str = "auto"
    resume: bool = False
    download: bool = False
    nproc: int = 1  # processes on this machine, launched through torch.distributed (one GPU each on CUDA)
    max_seconds: float | None = None  # stop (validated and checkpointed) once training has run this long
    # ... or once this process has used this much CPU time (every thread): a budget that stays fair when other jobs
    # share the cores (benchmarks/accuracy_grid.py gives every method the same one)
    max_cpu_seconds: float | None = None
    calibrate_episodes: int = 100  # per cell, on the validation classes, at the end (0: leave uncalibrated)

    def __post_init__(self) -> None:
        alg = get_algorithm(self.algorithm)
        if self.data != "sinusoid":
            BACKBONES.check_options(self.backbone, self.backbone_options)  # names listed, before any data is read
        parsed = alg.parse_options(self.options)  # typed, with every default: config.json says all of them
        object.__setattr__(self, "options", dataclasses.asdict(parsed))
        if self.adapt not in (None, "head", "all"):
            raise ConfigError(f"--adapt must be head or all, got {self.adapt!r}")
        if alg.needs_init and not self.init:
            raise ConfigError(f"--algorithm {self.algorithm} needs --init PRETRAIN_CKPT (a `mtl pretrain` run)")
        if min(self.iterations, self.meta_batch, self.inner_steps, self.val_every, self.val_episodes) < 1:
            raise ConfigError("iterations, meta-batch, inner steps, val-every and val-episodes must all be ≥ 1")
        if not (0 < self.inner_lr < math.inf and 0 < self.outer_lr < math.inf):
            raise ConfigError(f"learning rates must be positive and finite, got inner {self.inner_lr}, "
                              f"outer {self.outer_lr}")
        if self.chunk < 0:
            raise ConfigError(f"--chunk must be ≥ 0 (0 = whole meta-batch), got {self.chunk}")
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be ≥ 1, got {self.nproc}")
        if self.max_seconds is not None and not (0 < self.max_seconds < math.inf and self.nproc == 1):
            raise ConfigError(f"--max-seconds must be positive and finite, with one process; got {self.max_seconds}")
        if self.max_cpu_seconds is not None and not (0 < self.max_cpu_seconds < math.inf and self.nproc == 1):
            raise ConfigError(f"--max-cpu-seconds must be positive and finite, with one process; got "
                              f"{self.max_cpu_seconds}")
        if self.meta_batch % self.nproc:
            raise ConfigError(f"--meta-batch {self.meta_batch} does not split evenly over --nproc {self.nproc}; "
                              f"choose a multiple of {self.nproc}")
        EvalConfig(self.ways, self.shots, self.queries, self.val_episodes)
        if self.calibrate_episodes < 0:
            raise ConfigError(f"calibration episodes must be ≥ 0 (0: none), got {self.calibrate_episodes}")

    def hyper(self, device: torch.device | None = None) -> Hyper:
        cuda = device is not None and device.type == "cuda"
        return Hyper(inner_steps=self.inner_steps, first_order=self.first_order, chunk=self.chunk, bf16=cuda,
                     compile=cuda if self.compile is None else self.compile,
                     options=get_algorithm(self.algorithm).parse_options(self.options))


@dataclass(frozen=True)
class MetaTrainResult:
    run_dir: str
    iterations: int
    best_val: float
    last: dict
    calibration: Calibration | None = None  # the device settings chosen at the end (`pipeline.train.calibrate`)


def meta_train(cfg: MetaTrainConfig, on_step: StepCallback = no_progress) -> MetaTrainResult:
    """Run (or resume) a meta-training job: in this process, or as one rank of a torch.distributed job
    (torchrun's environment) that splits each meta-batch over the ranks (see `distributed`)."""
    ranks = Ranks.from_env()
    device = ranks.device(resolve_device(cfg.device))
    owns_group = ranks.start(device)
    fast_cuda_math(device)
    defaults = option_defaults(MetaTrainConfig)
    run = (RunDir(cfg.out, config_to_dict(cfg), resume=cfg.resume, defaults=defaults) if ranks.lead
           else FollowerRunDir(cfg.out))
    setup = prepare(cfg, device, ranks.tasks(cfg.meta_batch))
    run.create()  # data and model are fine: only now does the run directory appear
    run.write_splits(setup.meta["splits"])
    alg = get_algorithm(cfg.algorithm)
    hp = cfg.hyper(device)
    optimizers = alg.optimizers(setup.learner, cfg.outer_lr, hp)
    start, best = _maybe_resume(run, cfg, setup, optimizers)
    ranks.average_gradients(optimizers)
    update = alg.update  # with hp.compile, the meta-gradient's forward (and so its backward) is compiled inside
    record: dict = {}
    window = torch.zeros((), device=device)
    began, began_cpu = time.perf_counter(), time.process_time()
    done, since = start, 0
    for it in range(start, cfg.iterations):
        metrics = update(setup.learner, setup.tasks.sample(), optimizers, hp)
        if "chunk" in metrics and int(metrics["chunk"]) != hp.chunk:  # the meta-batch did not fit at once
            hp = dataclasses.replace(hp, chunk=int(metrics["chunk"]))
        if cfg.hard_tasks and "worst_classes" in metrics:
            update(setup.learner, setup.tasks.hard(ranks.gather(metrics["worst_classes"])), optimizers, hp)
        window += metrics["loss"].detach()
        done, since = it + 1, since + 1
        on_step("iteration", done, cfg.iterations, {})
        out_of_time = ((cfg.max_seconds is not None and time.perf_counter() - began >= cfg.max_seconds)
                       or (cfg.max_cpu_seconds is not None and time.process_time() - began_cpu >= cfg.max_cpu_seconds))
        if done % cfg.val_every == 0 or done == cfg.iterations or out_of_time:
            ranks.all_reduce_mean([window])
            if ranks.lead:  # rank 0 alone validates, logs and checkpoints
                record = _validate(setup, done, float(window) / since, optimizers, began, began_cpu)
                improved = record["val_score"] > best
                best = max(best, record["val_score"])
                run.log(record)
                _save(run, setup, alg, optimizers, {**setup.meta, "iteration": done, "best_val": best,
                                                     "metrics": record}, improved)
                on_step("validation", done, cfg.iterations, record)
            window.zero_()
            since = 0
        if out_of_time:
            break
    if owns_group:
        ranks.stop()
    calibration = None
    if ranks.lead and cfg.calibrate_episodes and cfg.data != "sinusoid":
        _, calibration = calibrate_checkpoint(run.path, cfg.calibrate_episodes, cfg.seed, cfg.device)
    return MetaTrainResult(str(run.path), done, best, record, calibration)


def fast_cuda_math(device: torch.device) -> None:
    """TF32 for the float32 matmuls and convolutions left outside bf16 autocast (CUDA only)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # static episode shapes: pick the fastest kernels once


def meta_train_process(cfg: MetaTrainConfig) -> MetaTrainResult:
    """The entry point of each process `mtl meta-train --nproc G` launches (picklable, no progress drawing)."""
    return meta_train(cfg)


def meta_train_job(cfg: MetaTrainConfig, on_step: StepCallback = no_progress) -> MetaTrainResult:
    """`mtl meta-train`: this process, or with `nproc` > 1 (outside torchrun) that many processes launched
    through torch.distributed's elastic launcher. A bad option fails here, once, before any process starts."""
    if cfg.nproc == 1 or "RANK" in os.environ:  # under torchrun, torchrun made the processes
        return meta_train(cfg, on_step)
    if resolve_device(cfg.device).type == "cuda":
        check_gpus(cfg.nproc)
    RunDir.checked(cfg.out, config_to_dict(cfg), resume=cfg.resume, defaults=option_defaults(MetaTrainConfig))
    return launch(meta_train_process, (cfg,), cfg.nproc)


def _validate(setup: Setup, iteration: int, train_loss: float, optimizers: list[torch.optim.Optimizer],
              began: float, began_cpu: float) -> dict:
    """The metrics row of one validation; `lr` is the outer (meta) learning rate now in force, so a report
    can draw it even if a schedule is added later."""
    score, ci95 = setup.validate()
    return {"iteration": iteration, "train_loss": train_loss, "val_score": score,
            "val_ci95": ci95, "lr": float(optimizers[0].param_groups[0]["lr"]),
            "seconds": round(time.perf_counter() - began, 3), "cpu_seconds": round(time.process_time() - began_cpu, 3)}


def _maybe_resume(run: RunDir, cfg: MetaTrainConfig, setup: Setup,
                  optimizers: list[torch.optim.Optimizer]) -> tuple[int, float]:
    if not cfg.resume:
        return 0, float("-inf")
    ckpt = load_checkpoint(run.last)
    run.check_checkpoint(ckpt.meta)
    load_weights(setup.learner, ckpt.model, ckpt.path)
    for i, opt in enumerate(optimizers):
        prefix = f"{i}/"
        restore_optimizer(opt, {k[len(prefix):]: v for k, v in ckpt.optim.items() if k.startswith(prefix)},
                          ckpt.meta["optimizers"][i])
    setup.tasks.load_state_dict({"generator": ckpt.rng["sampler"]})
    run.truncate_metrics(ckpt.meta["iteration"], "iteration")
    return int(ckpt.meta["iteration"]), float(ckpt.meta["best_val"])


def _save(run: RunDir, setup: Setup, alg: Algorithm, optimizers: list[torch.optim.Optimizer], meta: dict,
          improved: bool) -> None:
    state = setup.learner.state_dict()
    if improved:
        save_checkpoint(run.best, Checkpoint(meta, state))
    optim_tensors, infos = {}, []
    for i, opt in enumerate(optimizers):
        tensors, info = flatten_optimizer(opt)
        optim_tensors.update({f"{i}/{k}": v for k, v in tensors.items()})
        infos.append(info)
    rng = {"sampler": setup.tasks.state_dict()["generator"]}
    save_checkpoint(run.last, Checkpoint({**meta, "optimizers": infos}, state, optim_tensors, rng))


__all__ = ["LearnerSpec", "MetaLearner", "MetaTrainConfig", "MetaTrainResult", "meta_train", "meta_train_job"]
